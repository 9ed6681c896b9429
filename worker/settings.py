"""All configuration, read once through pydantic-settings (env prefix ``DMS_WORKER_``, ``.env``, secrets dir).

``Settings`` is what pydantic-settings loads: one flat namespace, so every variable keeps its name
(``DMS_WORKER_MAX_FILE_SIZE``, not ``..._COMMANDS__MAX_FILE_SIZE``). Its fields are declared in one group per stage
of the data path (``BrokerSettings``, ``TopologySettings``, ``IntakeSettings``, ``ResultSettings``,
``CommandSettings``, ``DmsSettings``, ``DestinationSettings``, ``OperationsSettings``, ``ConsoleSettings``), which
``Settings`` inherits. A stage takes its group, not the whole: the type says what it reads, a component that keeps
its settings is handed ``settings.view(CommandSettings)`` (a frozen copy of that group's fields), and a test builds
the group directly (``CommandSettings(max_file_size=1024)``) with the same defaults and checks, no environment read.
A function typed with a group also takes the whole ``Settings`` (a subclass): the CLI passes its own unchanged.

Why groups that ``Settings`` inherits, rather than a frozen dataclass per stage filled in from ``Settings``: each
field, its default and its check are written once, and a group cannot drift from the variable it is read from. What
crosses groups (the shard lease against the AMQP heartbeat) is checked on ``Settings``; the runtime wiring
(``worker.runtime.app``, ``worker.console.app``) and the CLI, which use most groups, keep ``Settings``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar, cast

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from worker.dms.destinations import DEFAULT_DESTINATION_NAME, Destination

LEASE_HEARTBEATS = 3  # a replica's lease on its shards lasts this many membership heartbeats (worker.intake.lease)

MIB = 1024 * 1024
DMS_MAX_FILE_SIZE = 400 * MIB  # the largest file DMS takes with its virus scan

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


ENV_PREFIX = "DMS_WORKER_"
BROKER_URL_FORM = "amqp://user:password@host:5672/vhost (or amqps://)"


def check_broker_url(url: SecretStr) -> SecretStr:
    """A broker address must be an amqp(s) URL with a host: anything else would be tried forever. The
    message never repeats the URL (it may hold a password)."""
    try:
        parsed = URL(url.get_secret_value())
    except ValueError:
        parsed = URL()
    if parsed.scheme not in {"amqp", "amqps"} or not parsed.host:
        raise ValueError(f"not a broker URL; give one like {BROKER_URL_FORM}")
    return url


class ConsoleUser(BaseModel):
    """Who may use the operator console, and what for: ``operator`` acts (replay, purge), ``viewer`` only looks."""

    role: Literal["operator", "viewer"]
    token: SecretStr = Field(min_length=16)


class StageSettings(BaseModel):
    """The settings one stage reads; frozen, so a stage cannot change what another one sees."""

    model_config = ConfigDict(frozen=True)


class BrokerSettings(StageSettings):
    """Reaching RabbitMQ: where, and how soon a silent connection counts as lost."""

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # A cluster's nodes (JSON list); when set it replaces amqp_url. Reconnects go to the next one that answers.
    amqp_urls: list[SecretStr] = Field(default_factory=list)
    # What the producer helper and CLI publish at most (the broker's max_message_size: 16 MiB on RabbitMQ 4.x,
    # 128 MiB on 3.x); a larger inline upload is refused with a pointer to content_url.
    broker_max_message_size: int = Field(default=16 * MIB, ge=1)
    # AMQP heartbeat asked of the broker: how soon it finds a silent replica and hands its shards on. Must be
    # above the lease (3 membership heartbeats, worker.intake.lease) so a cut-off replica stops writing first.
    amqp_heartbeat_s: int = Field(default=15, ge=1)

    @field_validator("amqp_url")
    @classmethod
    def _one_broker_url(cls, url: SecretStr) -> SecretStr:
        return check_broker_url(url)

    @field_validator("amqp_urls")
    @classmethod
    def _broker_urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        return [check_broker_url(url) for url in urls]

    def broker_urls(self) -> list[str]:
        """The broker addresses to try, in order: ``amqp_urls`` if given, else ``amqp_url``."""
        return [url.get_secret_value() for url in self.amqp_urls] or [self.amqp_url.get_secret_value()]


class TopologySettings(StageSettings):
    """The names and shapes of the exchanges and queues (worker.amqp.topology)."""

    command_exchange: str = "dms.commands"
    command_queue: str = "dms.commands"
    result_exchange: str = "dms.results"
    results_queue: str | None = "dms.results.all"  # a durable catch-all so no event is unroutable
    # ...bounded, so it cannot grow forever where nobody reads it: the oldest events go first (drop-head)
    results_queue_max_length: int | None = Field(default=100_000, ge=1)
    results_queue_message_ttl_s: float | None = Field(default=7 * 86_400, gt=0)
    dead_letter_queue: str = "dms.commands.dlq"
    shard_count: int = Field(default=128, ge=1)  # per-document order: one single-active-consumer queue per shard
    delivery_limit: int = 20  # quorum-queue redeliveries (crash loops) before RabbitMQ dead-letters


class IntakeSettings(StageSettings):
    """Which commands a replica reads and runs, and how many at once (worker.intake)."""

    in_flight_limit: int = Field(default=64, ge=1)  # commands a replica runs at once (retry backoffs not counted)
    # Unacked deliveries per held shard queue (its prefetch): how far a replica reads past a document in retry
    # backoff or another tenant's backlog (at least IN_FLIGHT_LIMIT). The same on every replica of a fleet:
    # raise it freely, lower it with the fleet stopped.
    read_ahead: int = Field(default=1024, ge=1)
    # Bytes the read-ahead may hold; past it the replica stops reading deliveries (worker.amqp.read_gate)
    read_ahead_bytes: int = Field(default=256 * MIB, ge=1)
    # A succeeded upload's ack waits up to this long to go with others of its queue as one frame
    # (worker.amqp.acks; other outcomes are acked at once): a quarter to a third of the broker's CPU per
    # upload; 0 still batches within a loop turn.
    ack_delay_ms: int = Field(default=100, ge=0)
    queue_poll_s: float = Field(default=1.0, gt=0)  # how often a replica reads its queues' depths (for balancing)
    tenant_weights: dict[str, float] = Field(default_factory=dict)  # tenant UUID -> share weight (default 1)
    # Commands run at once: follows the DMS round trip between CONCURRENCY_MIN and IN_FLIGHT_LIMIT
    # (worker.intake.concurrency); off: always IN_FLIGHT_LIMIT.
    adaptive_concurrency: bool = True
    concurrency_min: int = Field(default=8, ge=1)
    membership_heartbeat_s: float = Field(default=1.0, gt=0)  # replicas announce themselves to share shards
    # Heartbeats a fresh (or reconnected) replica listens for the others before claiming shards. Tests of a lone
    # replica set 0; with others about, less than 2 risks taking a shard still held elsewhere for a moment.
    membership_listen_heartbeats: float = Field(default=2.0, ge=0)


class ResultSettings(StageSettings):
    """How a command ends: its retry schedule and the source its result events name (worker.results)."""

    retry_delays_ms: list[int] = Field(default_factory=lambda: [1_000, 5_000, 30_000, 120_000])
    event_source: str = "urn:dms-upload-worker"


class CommandSettings(StageSettings):
    """Handling one command (worker.commands.handlers): what it may upload, how content_url bodies are fetched,
    and whom DMS sees writing."""

    # SAP's CALM guide said 10 MB until 2025-10, 120 MB since; DMS takes up to 400 MB with virus scanning.
    max_file_size: int = Field(default=10 * MIB, ge=1, le=DMS_MAX_FILE_SIZE)
    allowed_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    allowed_mime_types: list[str] = Field(default_factory=lambda: list(DEFAULT_MIME_TYPES))
    max_file_name_length: int = 255
    content_url_allowed_hosts: list[str] = Field(default_factory=list)
    content_fetch_timeout_s: float = 30.0  # connect and idle; the whole fetch gets 1 s more per MiB of the limit
    # content_url bodies are spooled to files here (default: <temp dir>/dms-upload-worker); must be writable
    spool_dir: Path | None = None
    # content_url uploads spooled at once per replica: the spool needs up to this x MAX_FILE_SIZE of disk
    content_fetch_concurrency: int = Field(default=16, ge=1)
    allow_active_content: bool = False  # SVG with script, HTML disguised as text: refused unless True
    max_archive_expanded_size: int = 100 * MIB  # a zip whose declared expansion exceeds this is refused
    # Sent as X-EcmUserEnc on CMIS calls: DMS records it as the owner of the worker's checkouts, so the worker
    # cancels a working copy left by an attempt of its own and waits for anyone else's (README, "Guarantees").
    dms_user: str = Field(default="dms-upload-worker", min_length=1)


class DmsSettings(StageSettings):
    """The HTTP side of the DMS client: timeouts, connections, TLS trust."""

    dms_timeout_s: float = 60.0
    # A DMS connection whose sent bytes stay unacknowledged this long is dropped (worker.dms.stalls).
    dms_stall_timeout_s: float = Field(default=10.0, gt=0)
    dms_connections: int = 64
    user_agent: str = "dms-upload-worker/0.1"
    ca_bundle: Path | None = None  # PEM CAs trusted for HTTPS in addition to the system's


class DestinationSettings(StageSettings):
    """Which DMS a tenant's documents go to: the configured destinations, then SAP BTP's service bindings and
    Destination service (README, "Running on SAP BTP"). The two binding variables are the platforms' own
    names, without our prefix."""

    destination: Destination | None = None
    tenant_destinations: dict[uuid.UUID, Destination] = Field(default_factory=dict)
    vcap_services: SecretStr | None = Field(  # Cloud Foundry: bindings labelled sdm and destination
        default=None, validation_alias=AliasChoices("VCAP_SERVICES", "vcap_services")
    )
    service_binding_root: Path | None = Field(  # servicebinding.io (Kyma): one directory per binding
        default=None, validation_alias=AliasChoices("SERVICE_BINDING_ROOT", "service_binding_root")
    )
    destination_name: str = DEFAULT_DESTINATION_NAME  # asked of the Destination service
    tenant_destination_names: dict[uuid.UUID, str] = Field(default_factory=dict)  # tenant UUID -> destination name
    destination_cache_ttl_s: float = Field(default=300.0, gt=0)  # a looked-up destination is kept at most this long


class OperationsSettings(StageSettings):
    """Running the process: health and metrics endpoint, shutdown, logs."""

    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int | None = 8080  # health and metrics; None disables, 0 picks a free port
    shutdown_grace_s: float = 30.0
    log_level: str = "INFO"
    log_json: bool = True


class ConsoleSettings(StageSettings):
    """The operator console (python -m worker console; worker.console): off unless started."""

    console_host: str = "127.0.0.1"  # loopback: put a proxy with the platform's login in front to share it
    console_port: int = Field(default=8090, ge=0)  # 0 picks a free port
    console_users: dict[str, ConsoleUser] = Field(default_factory=dict)  # name -> role and sign-in token
    console_users_file: Path | None = None  # the same JSON in a file (a mounted Secret); adds to console_users
    console_scan_limit: int = Field(default=100_000, ge=1)  # dead letters the console's index covers at most
    console_replay_rate: float = Field(default=50.0, gt=0)  # a replay job's default rate, commands per second
    console_events_kept: int = Field(default=10_000, ge=100)  # result events the console remembers (feed, history)


Stage = TypeVar("Stage", bound=StageSettings)


class Settings(
    # Listed last stage first: pydantic orders the fields from the last base, so they read broker to console.
    ConsoleSettings,
    OperationsSettings,
    DestinationSettings,
    DmsSettings,
    CommandSettings,
    ResultSettings,
    IntakeSettings,
    TopologySettings,
    BrokerSettings,
    BaseSettings,
):
    """Every group at once, as pydantic-settings loads it; hand a stage ``view(ItsGroup)``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        env_parse_none_str="null",
        hide_input_in_errors=True,  # a service key or VCAP_SERVICES that fails validation holds secrets
        frozen=False,  # the groups are frozen views; the loaded whole is what tools and tests adjust
    )

    @model_validator(mode="after")
    def _lease_before_handover(self) -> Settings:
        lease_s = self.membership_heartbeat_s * LEASE_HEARTBEATS
        if self.amqp_heartbeat_s <= lease_s:
            raise ValueError(
                f"AMQP_HEARTBEAT_S ({self.amqp_heartbeat_s}) must be above the shard lease ({lease_s:g} s = "
                f"{LEASE_HEARTBEATS} x MEMBERSHIP_HEARTBEAT_S): a replica cut off from the broker must stop writing "
                "before the broker hands its shards to another"
            )
        return self

    def view(self, stage: type[Stage]) -> Stage:
        """A frozen copy of one group's fields. Not validated again (they were, by the same definitions), and
        not deep-copied: a dict in it is the one in ``Settings``."""
        if stage not in type(self).__mro__:
            raise TypeError(f"{stage.__name__} is not a group of Settings")
        values = {name: getattr(self, name) for name in stage.model_fields}
        return cast(Stage, stage.model_construct(**values))  # pydantic's mypy plugin types it as the bound


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``DMS_WORKER_*`` variables that name no setting (a typo would otherwise go unnoticed). A nested one
    (``DMS_WORKER_DESTINATION__URI``) counts as known when its first part names a setting. Names are compared
    as pydantic-settings reads them, ignoring case; a setting read under the platform's own name
    (``VCAP_SERVICES``) is not read with the prefix, so ``DMS_WORKER_VCAP_SERVICES`` is unknown."""
    environ = os.environ if environ is None else environ
    known = {name.upper() for name, field in Settings.model_fields.items() if field.validation_alias is None}
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX) and name.upper()[len(ENV_PREFIX) :].split("__")[0] not in known
    )
