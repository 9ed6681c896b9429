"""The broker side that brings commands in: shard ownership between replicas, one channel per held shard, the
dispatcher that decides which held command runs next, and the consumer that runs a command and settles it."""
