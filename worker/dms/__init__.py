"""SAP DMS over HTTP: destinations, the OAuth2 token cache, the typed client and its error mapping,
and the tenant repositories. Knows nothing of RabbitMQ or commands."""
