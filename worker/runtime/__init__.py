"""Running the worker as a process: wiring and graceful shutdown, health and metrics endpoints, logging,
the HTTP site helper and the event loop."""
