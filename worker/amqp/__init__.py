"""RabbitMQ itself: every wire-level name, the topology the worker declares, and message copies."""
