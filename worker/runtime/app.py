"""Wires the worker together: broker connection, topology, HTTP session, token cache, DMS clients, consumer."""

from __future__ import annotations

import time
import uuid
from typing import cast

import aiohttp
import structlog
import yarl
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiohttp import web

from worker.amqp import topology
from worker.amqp.confirms import ConfirmingExchange
from worker.amqp.connection import connect_robust
from worker.amqp.names import members_exchange_name
from worker.commands.handlers import Handlers
from worker.commands.spool import Spool
from worker.dms.bindings import Bindings, discover
from worker.dms.client import DmsClient, RequestObserver
from worker.dms.credentials import ConfiguredCredentials, Credentials, LookedUpCredentials
from worker.dms.destination_service import DestinationService
from worker.dms.destinations import (
    Destination,
    DestinationName,
    DestinationSources,
    choose_destination,
    readiness_target,
)
from worker.dms.repositories import TenantRepositories
from worker.dms.stalls import stall_detecting
from worker.dms.tls import trust_context
from worker.dms.tokens import TokenCache
from worker.errors import UnknownTenant
from worker.intake.concurrency import AdaptiveLimit
from worker.intake.consumer import CommandConsumer
from worker.intake.ownership import ShardAssigner
from worker.intake.shard_consumers import ShardConsumers
from worker.results.events import ResultPublisher
from worker.runtime import health, logs
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.serving import start_site
from worker.settings import Settings

log = structlog.get_logger(__name__)


class DmsClients:
    """One ``DmsClient`` per destination; the tenant decides the destination.

    Destinations come from the settings, the service bindings (discovered once) and the BTP Destination
    service; ``choose_destination`` applies the order of precedence.
    """

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        observe: RequestObserver | None = None,
        bindings: Bindings | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._tokens = tokens
        self._observe = observe
        vcap = settings.vcap_services.get_secret_value() if settings.vcap_services is not None else None
        self.bindings = bindings if bindings is not None else discover(vcap, settings.service_binding_root)
        for bound in (self.bindings.dms, self.bindings.destination_service):
            for secret in bound.secrets() if bound is not None else []:
                logs.register_secret(secret)
        self.destination_service: DestinationService | None = None
        if self.bindings.destination_service is not None:
            self.destination_service = DestinationService(
                session,
                self.bindings.destination_service,
                tokens,
                ttl_s=settings.destination_cache_ttl_s,
                on_secret=logs.register_secret,
            )
        self._clients: dict[Destination | DestinationName, DmsClient] = {}

    def sources(self) -> DestinationSources:
        s = self._settings  # read each time: tests (and only tests) change tenant_destinations in place
        return DestinationSources(
            tenant_destinations=s.tenant_destinations,
            destination=s.destination,
            bound_dms=self.bindings.dms,
            destination_service=self.destination_service is not None,
            tenant_destination_names=s.tenant_destination_names,
            destination_name=s.destination_name,
        )

    def for_tenant(self, tenant_id: uuid.UUID) -> DmsClient:
        choice = choose_destination(tenant_id, self.sources())
        if choice is None:
            raise UnknownTenant(f"tenant {tenant_id} has no DMS destination configured")
        return self._client(choice)

    def _client(self, choice: Destination | DestinationName) -> DmsClient:
        client = self._clients.get(choice)
        if client is None:
            credentials: Credentials
            if isinstance(choice, DestinationName):
                assert self.destination_service is not None
                credentials = LookedUpCredentials(choice, self.destination_service, self._tokens)
            else:
                credentials = ConfiguredCredentials(choice, self._tokens)
            client = DmsClient(
                self._session, credentials, self._settings.dms_timeout_s, self._observe, self._settings.dms_user
            )
            self._clients[choice] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    async def check_ready(self) -> None:
        """Readiness: a destination can be resolved and a token had for it (the default one, else a tenant's)."""
        target = readiness_target(self.sources())
        if target is None:
            raise UnknownTenant(
                "none configured: set DMS_WORKER_DESTINATION, bind a DMS (sdm) service, or bind the Destination service"
            )
        await self._client(target).check_credentials()


def register_settings_secrets(settings: Settings) -> None:
    for url in [settings.amqp_url.get_secret_value(), *settings.broker_urls()]:
        logs.register_secret(url)
        if password := yarl.URL(url).password:
            logs.register_secret(password)
    for destination in [settings.destination, *settings.tenant_destinations.values()]:
        if destination is not None:
            for secret in destination.secrets():
                logs.register_secret(secret)


class Worker:
    """Start with ``await worker.start()``; stop with ``await worker.stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.connection: AbstractRobustConnection | None = None
        self.http: aiohttp.ClientSession | None = None
        self.spool: Spool | None = None
        self.tokens: TokenCache | None = None
        self.dms_clients: DmsClients | None = None
        self.consumer: CommandConsumer | None = None
        self.http_port: int | None = None
        self.concurrency: AdaptiveLimit | None = None
        self.intake: ShardConsumers | None = None
        self._health: web.AppRunner | None = None
        self._assigner: ShardAssigner | None = None

    async def start(self) -> None:
        s = self.settings
        register_settings_secrets(s)
        # First: a spool directory that is not writable is a configuration mistake, said before anything else.
        self.spool = Spool.open(s.spool_dir)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.dms_connections,
                ssl=trust_context(s.ca_bundle),
                socket_factory=stall_detecting(s.dms_stall_timeout_s),
            ),
            headers={"User-Agent": s.user_agent},
        )
        self.tokens = TokenCache(
            self.http,
            on_fetch=self.metrics.token_fetches.inc,
            ca_bundle=s.ca_bundle,
            on_fetch_failed=self.metrics.token_fetch_failures.inc,
        )
        # As many commands run at once as DMS answers without queueing (at most IN_FLIGHT_LIMIT).
        limit = self.concurrency = AdaptiveLimit(maximum=s.in_flight_limit, minimum=s.concurrency_min)

        def observe(operation: str, status: int, seconds: float, body_bytes: int) -> None:
            self.metrics.observe_dms_request(operation, status, seconds)
            if s.adaptive_concurrency and self.intake is not None:
                limit.note_running(self.intake.dispatcher.running)
                if limit.observe(operation, seconds, status, body_bytes, time.monotonic()):
                    self.intake.dispatcher.wake()

        clients = self.dms_clients = DmsClients(s, self.http, self.tokens, observe)
        handlers = Handlers(s, clients, TenantRepositories(), self.http, self.spool)

        # Any node of the cluster; on loss the next one that answers, with everything below restored.
        self.connection = await connect_robust(s.broker_urls())
        self.connection.reconnect_callbacks.add(lambda *_: handlers.forget_everything())
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        declared = await topology.declare(channel, s)
        results = cast(AbstractExchange, ConfirmingExchange(declared.result_exchange))  # resent if unconfirmed
        self.consumer = CommandConsumer(s, channel, handlers, ResultPublisher(results), self.metrics)
        shards = self.intake = ShardConsumers(
            self.connection,
            declared.shard_queue_names,
            topology.command_queue_arguments(s),
            self.consumer,
            running_limit=lambda: limit.limit,  # stays at IN_FLIGHT_LIMIT unless ADAPTIVE_CONCURRENCY moves it
            tenant_weights=s.tenant_weights,
            read_ahead=s.read_ahead,
            read_ahead_bytes=s.read_ahead_bytes,
            poll_s=s.queue_poll_s,
            on_taken=handlers.forget_shard,
        )
        self.metrics.watch_shards(shards.loads)
        self.metrics.watch_intake(shards.dispatcher, lambda: limit.limit, lambda: shards.paused)
        await shards.start()
        assigner = self._assigner = ShardAssigner(
            channel,
            members_exchange_name(s.command_queue),
            s.shard_count,
            take=shards.take,
            release=shards.release,
            in_flight=shards.in_flight,
            heartbeat_s=s.membership_heartbeat_s,
            backlog=shards.backlog,
            work_low_water=s.in_flight_limit,
            running=shards.dispatcher.running_by_tenant,
        )
        await self._assigner.start()
        self.connection.close_callbacks.add(lambda *_: assigner.connection_lost())
        self.connection.reconnect_callbacks.add(lambda *_: assigner.connection_restored())
        if s.http_port is not None:
            checks = health.HealthChecks(consuming=self.consuming, token_obtainable=self.check_token)
            self._health, self.http_port = await start_site(
                health.make_app(checks, self.metrics), s.http_host, s.http_port
            )
        log.info(
            "worker_started",
            queue=s.command_queue,
            shards=s.shard_count,
            in_flight_limit=s.in_flight_limit,
            http_port=self.http_port,
        )

    def consuming(self) -> bool:
        return (
            self._assigner is not None
            and self.connection is not None
            and not self.connection.is_closed
            and self.connection.connected.is_set()
        )

    async def check_token(self) -> None:
        """Readiness: a DMS destination can be resolved and a token had for it."""
        if self.dms_clients is not None:
            await self.dms_clients.check_ready()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking commands, let started ones finish within the grace period, give the rest back, close."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        if self._assigner is not None:
            await self._assigner.release_all()  # heartbeats go on: nobody takes our shards while we drain
        if self.intake is not None:
            log.info("draining", running=self.intake.dispatcher.running, grace_s=grace)
            await self.intake.stop(grace)  # closing each channel returns its unsettled deliveries, in order
        if self._assigner is not None:
            await self._assigner.stop()
        if self._health is not None:
            await self._health.cleanup()
        if self.connection is not None:
            await self.connection.close()
        if self.dms_clients is not None:
            await self.dms_clients.close()  # their probes of an unreachable DMS
        if self.http is not None:
            await self.http.close()
        if self.spool is not None:
            self.spool.close()
        log.info("worker_stopped")
