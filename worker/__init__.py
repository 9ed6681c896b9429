"""dms-upload-worker: moves documents from RabbitMQ commands into SAP Document Management Service."""
