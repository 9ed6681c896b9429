"""The broker side that brings commands in: the shard router, shard ownership between replicas, and the
consumer that runs one command per document at a time and settles its message."""
