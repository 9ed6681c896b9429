"""Wires the worker together: broker connection, topology, HTTP session, token cache, DMS clients, consumer."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import aiohttp
import structlog
import yarl
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from worker.amqp import topology
from worker.amqp.acks import DelayedAcks
from worker.amqp.confirms import ConfirmingExchange
from worker.amqp.connection import connect_robust
from worker.amqp.names import census_exchange_name, members_exchange_name
from worker.amqp.read_gate import ReadGate
from worker.amqp.tombstones import BrokerTombstones
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
from worker.intake.census import CensusResponder
from worker.intake.concurrency import AdaptiveLimit
from worker.intake.consumer import CommandConsumer
from worker.intake.lease import BrokerLease
from worker.intake.ownership import ShardAssigner
from worker.intake.shard_consumers import ShardConsumers
from worker.results.events import ResultPublisher
from worker.runtime import health, logs
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.preflight import destination_sources
from worker.runtime.serving import start_site
from worker.settings import CommandSettings, DestinationSettings, ResultSettings, Settings, TopologySettings

log = structlog.get_logger(__name__)


class DmsClients:
    """One ``DmsClient`` per destination; the tenant decides the destination.

    Destinations come from the settings, the service bindings (discovered once) and the BTP Destination
    service; ``choose_destination`` applies the order of precedence.
    """

    def __init__(
        self,
        settings: DestinationSettings,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        *,
        timeout_s: float,  # DMS_TIMEOUT_S
        user: str,  # DMS_USER
        observe: RequestObserver | None = None,
        bindings: Bindings | None = None,
    ) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._user = user
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
        # Made each time: tests (and only tests) add to tenant_destinations in place.
        return destination_sources(self._settings, self.bindings)

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
                if self.destination_service is None:  # choose_destination names one only when it is bound
                    raise UnknownTenant(f"destination {choice.name} needs the Destination service, which is not bound")
                credentials = LookedUpCredentials(choice, self.destination_service, self._tokens)
            else:
                credentials = ConfiguredCredentials(choice, self._tokens)
            client = DmsClient(self._session, credentials, self._timeout_s, self._observe, self._user)
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


@dataclass(frozen=True)
class Parts:
    """What a started worker is made of (readiness checks, tests and the demo look inside)."""

    connection: AbstractRobustConnection
    tokens: TokenCache
    dms_clients: DmsClients
    concurrency: AdaptiveLimit
    intake: ShardConsumers
    http_port: int | None  # the health and metrics endpoint (None: not served)


@contextlib.asynccontextmanager
async def holding_shards(
    intake: ShardConsumers, assigner: ShardAssigner, grace_s: Callable[[], float]
) -> AsyncIterator[None]:
    """Takes part in sharing the shards while inside. Leaving releases every shard with heartbeats still
    going (nobody takes our shards while we drain), lets started commands finish within ``grace_s()``, gives
    the rest back by closing their channels (in order), and only then stops the heartbeats."""
    await intake.start()
    try:
        await assigner.start()
    except BaseException:
        await intake.stop(0)
        raise
    try:
        yield
    finally:
        await assigner.release_all()
        grace = grace_s()
        log.info("draining", running=intake.dispatcher.running, grace_s=grace)
        await intake.stop(grace)  # closing each channel returns its unsettled deliveries, in order
        await assigner.stop()


class Worker:
    """Start with ``await worker.start()``; stop with ``await worker.stop()``.

    Everything ``start`` opens is entered on one ``AsyncExitStack``, in this order: spool, HTTP session,
    broker connection, health endpoint, shard intake with its assigner. ``stop`` releases each once, in
    reverse order, and so does a ``start`` that fails or is cancelled half-way (for what it had opened)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self._resources = contextlib.AsyncExitStack()
        self._grace_s = settings.shutdown_grace_s
        self._parts: Parts | None = None

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the worker has not started")
        return self._parts

    async def start(self) -> None:
        try:
            self._parts = await self._open(self._resources)
        except BaseException:
            with contextlib.suppress(Exception):  # what start raised says more than a failed close
                await self._resources.aclose()
            raise
        s = self.settings
        log.info(
            "worker_started",
            queue=s.command_queue,
            shards=s.shard_count,
            in_flight_limit=s.in_flight_limit,
            http_port=self._parts.http_port,
        )

    async def _open(self, resources: contextlib.AsyncExitStack) -> Parts:
        s = self.settings
        register_settings_secrets(s)
        # First: a spool directory that is not writable is a configuration mistake, said before anything else.
        spool = Spool.open(s.spool_dir)
        resources.callback(spool.close)
        http = await resources.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=s.dms_connections,
                    ssl=trust_context(s.ca_bundle),
                    socket_factory=stall_detecting(s.dms_stall_timeout_s),
                ),
                headers={"User-Agent": s.user_agent},
            )
        )
        tokens = TokenCache(
            http,
            on_fetch=self.metrics.token_fetches.inc,
            ca_bundle=s.ca_bundle,
            on_fetch_failed=self.metrics.token_fetch_failures.inc,
        )
        # As many commands run at once as DMS answers without queueing (at most IN_FLIGHT_LIMIT).
        limit = AdaptiveLimit(maximum=s.in_flight_limit, minimum=s.concurrency_min)
        intake: ShardConsumers | None = None  # made below; a readiness check may call DMS before it exists

        def observe(operation: str, status: int, seconds: float, body_bytes: int) -> None:
            self.metrics.observe_dms_request(operation, status, seconds)
            if s.adaptive_concurrency and intake is not None:
                limit.note_running(intake.dispatcher.running)
                if limit.observe(operation, seconds, status, body_bytes, time.monotonic()):
                    intake.dispatcher.wake()

        clients = DmsClients(
            s.view(DestinationSettings), http, tokens, timeout_s=s.dms_timeout_s, user=s.dms_user, observe=observe
        )
        resources.push_async_callback(clients.close)  # their probes of an unreachable DMS, before the session

        # Any node of the cluster; on loss the next one that answers, with everything below restored.
        broker_urls = [with_heartbeat(url, s.amqp_heartbeat_s) for url in s.broker_urls()]
        connection = await connect_robust(broker_urls)
        resources.push_async_callback(connection.close)
        repositories = TenantRepositories(BrokerTombstones(connection, s.command_exchange))
        handlers = Handlers(s.view(CommandSettings), clients, repositories, http, spool)
        connection.reconnect_callbacks.add(lambda *_: handlers.forget_everything())
        # The shard subscriptions on a connection of their own, whose reads stop while the read-ahead is full
        # (worker.amqp.read_gate): confirms and heartbeats on the one above are read meanwhile.
        gate = ReadGate(longest_s=s.amqp_heartbeat_s)  # aiormq gives a connection up after (it + 1) x 3 silent
        intake_connection = await connect_robust(broker_urls, transport_factory=gate)
        resources.push_async_callback(intake_connection.close)
        intake_connection.reconnect_callbacks.add(lambda *_: handlers.forget_everything())

        http_port: int | None = None
        if s.http_port is not None:  # up before the intake and down after it: probes and metrics cover the drain
            checks = health.HealthChecks(consuming=self.consuming, token_obtainable=clients.check_ready)
            runner, http_port = await start_site(health.make_app(checks, self.metrics), s.http_host, s.http_port)
            resources.push_async_callback(runner.cleanup)

        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        declared = await topology.declare(channel, s)
        results = cast(AbstractExchange, ConfirmingExchange(declared.result_exchange))  # resent if unconfirmed
        lease = BrokerLease(s.membership_heartbeat_s)
        acks = DelayedAcks(s.ack_delay_ms / 1000)
        consumer = CommandConsumer(
            s.view(TopologySettings),
            s.view(ResultSettings),
            s.max_file_size,
            channel,
            handlers,
            ResultPublisher(results),
            self.metrics,
            lease=lease,
            acks=acks,
        )
        shards = intake = ShardConsumers(
            intake_connection,
            declared.shard_queue_names,
            topology.command_queue_arguments(s),
            consumer,
            running_limit=lambda: limit.limit,  # stays at IN_FLIGHT_LIMIT unless ADAPTIVE_CONCURRENCY moves it
            tenant_weights=s.tenant_weights,
            read_ahead=s.read_ahead,
            read_ahead_bytes=s.read_ahead_bytes,
            gate=gate,
            poll_s=s.queue_poll_s,
            on_taken=handlers.forget_shard,
            heard=lease.heard,
            acks=acks,
        )
        self.metrics.watch_shards(shards.loads)
        self.metrics.watch_intake(shards.dispatcher, lambda: limit.limit, lambda: shards.reading_paused)
        assigner = ShardAssigner(
            channel,
            members_exchange_name(s.command_queue),
            s.shard_count,
            take=shards.take,
            release=shards.release,
            in_flight=shards.in_flight,
            heartbeat_s=s.membership_heartbeat_s,
            listen_heartbeats=s.membership_listen_heartbeats,
            backlog=shards.backlog,
            work_low_water=s.in_flight_limit,
            heard=lease.heard,
            running=lambda: shards.dispatcher.running_by_tenant(),
        )
        await resources.enter_async_context(holding_shards(shards, assigner, lambda: self._grace_s))
        census = CensusResponder(
            channel, census_exchange_name(s.command_queue), assigner.me, lambda t: shards.dispatcher.held_for(t)
        )
        await census.start()  # tenant offboard asks the replicas how many of a tenant's commands they hold
        connection.close_callbacks.add(lambda *_: assigner.connection_lost())
        connection.reconnect_callbacks.add(lambda *_: assigner.connection_restored())
        return Parts(connection, tokens, clients, limit, shards, http_port)

    def consuming(self) -> bool:
        connection = self._parts.connection if self._parts is not None else None
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking commands, let started ones finish within the grace period, give the rest back, close."""
        if grace_s is not None:
            self._grace_s = grace_s
        await self._resources.aclose()
        log.info("worker_stopped")


def with_heartbeat(url: str, heartbeat_s: int) -> str:
    """The broker URL asking for ``AMQP_HEARTBEAT_S`` unless it names a heartbeat itself."""
    parsed = yarl.URL(url)
    return url if "heartbeat" in parsed.query else str(parsed.update_query(heartbeat=heartbeat_s))
