"""How a command ends: the ack / retry / dead-letter decision, result events, and dead-letter tooling."""
