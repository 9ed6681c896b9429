"""All configuration, read once through pydantic-settings (env prefix ``DMS_WORKER_``, ``.env``, secrets dir)."""

from __future__ import annotations

import json
import uuid

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.destinations import Destination

MIB = 1024 * 1024

DEFAULT_EXTENSIONS = [
    "pdf", "txt", "csv", "md", "rtf", "xml", "json",
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "vsdx", "msg", "eml",
    "png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "svg", "zip",
]  # fmt: skip
DEFAULT_MIME_TYPES = [
    "application/pdf", "text/plain", "text/csv", "text/markdown", "application/rtf", "text/rtf",
    "application/xml", "text/xml", "application/json",
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation", "application/vnd.ms-visio.drawing",
    "application/vnd.ms-outlook", "message/rfc822",
    "image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/svg+xml",
    "application/zip", "application/octet-stream",
]  # fmt: skip


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DMS_WORKER_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        env_parse_none_str="null",
    )

    # broker
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    command_exchange: str = "dms.commands"
    command_queue: str = "dms.commands"
    result_exchange: str = "dms.results"
    results_queue: str | None = "dms.results.all"  # a durable catch-all so no event is unroutable
    dead_letter_queue: str = "dms.commands.dlq"
    shard_count: int = Field(default=8, ge=1)  # per-document order: one single-active-consumer queue per shard
    router_prefetch: int = Field(default=64, ge=1)  # ingress messages being moved to shards at once
    membership_heartbeat_s: float = Field(default=1.0, gt=0)  # replicas announce themselves to share shards
    retry_delays_ms: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000, 120_000])
    delivery_limit: int = 20  # quorum-queue redeliveries (crash loops) before RabbitMQ dead-letters
    prefetch: int = 8  # per shard queue (RabbitMQ applies it per consumer): up to prefetch x shards in flight
    event_source: str = "urn:dms-upload-worker"

    # DMS
    destination: Destination | None = None
    tenant_destinations: dict[uuid.UUID, Destination] = Field(default_factory=dict)
    dms_timeout_s: float = 60.0
    dms_connections: int = 64
    user_agent: str = "dms-upload-worker/0.1"

    # validation
    max_file_size: int = 10 * MIB  # SAP's CALM guide said 10 MB until 2025-10, 120 MB since
    allowed_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    allowed_mime_types: list[str] = Field(default_factory=lambda: list(DEFAULT_MIME_TYPES))
    max_file_name_length: int = 255
    content_url_allowed_hosts: list[str] = Field(default_factory=list)
    content_fetch_timeout_s: float = 30.0

    # operations
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int | None = 8080  # health and metrics; None disables, 0 picks a free port
    shutdown_grace_s: float = 30.0
    log_level: str = "INFO"
    log_json: bool = True

    def destination_for(self, tenant_id: uuid.UUID) -> Destination | None:
        return self.tenant_destinations.get(tenant_id, self.destination)

    def as_environment(self) -> dict[str, str]:
        """These settings as ``DMS_WORKER_*`` variables (secrets included): to start replicas with them."""
        env: dict[str, str] = {}
        plain = self.model_dump(mode="json", exclude={"amqp_url", "destination", "tenant_destinations"})
        for key, value in plain.items():
            env[f"DMS_WORKER_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        env["DMS_WORKER_AMQP_URL"] = self.amqp_url.get_secret_value()
        if self.destination is not None:
            env["DMS_WORKER_DESTINATION"] = json.dumps(self.destination.as_properties())
        if self.tenant_destinations:
            env["DMS_WORKER_TENANT_DESTINATIONS"] = json.dumps(
                {str(t): d.as_properties() for t, d in self.tenant_destinations.items()}
            )
        return env
