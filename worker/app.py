"""Wires the worker together: broker connection, topology, HTTP session, token cache, DMS clients, consumer."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import aiohttp
import structlog
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from aiohttp import web

from worker import health, logs, topology
from worker.consumer import CommandConsumer
from worker.destinations import Destination
from worker.dms_client import DmsClient, RequestObserver
from worker.errors import UnknownTenant
from worker.handlers import Handlers
from worker.metrics import WorkerMetrics
from worker.repositories import TenantRepositories
from worker.results import ResultPublisher
from worker.serving import start_site
from worker.settings import Settings
from worker.shard_assignment import ShardAssigner
from worker.sharding import ShardRouter
from worker.tokens import TokenCache

log = structlog.get_logger(__name__)


class DmsClients:
    """One ``DmsClient`` per destination; the tenant decides the destination."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        tokens: TokenCache,
        observe: RequestObserver | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._tokens = tokens
        self._observe = observe
        self._clients: dict[Destination, DmsClient] = {}

    def for_tenant(self, tenant_id: uuid.UUID) -> DmsClient:
        destination = self._settings.destination_for(tenant_id)
        if destination is None:
            raise UnknownTenant(f"tenant {tenant_id} has no DMS destination configured")
        client = self._clients.get(destination)
        if client is None:
            client = DmsClient(self._session, destination, self._tokens, self._settings.dms_timeout_s, self._observe)
            self._clients[destination] = client
        return client


def register_settings_secrets(settings: Settings) -> None:
    logs.register_secret(settings.amqp_url.get_secret_value())
    for destination in [settings.destination, *settings.tenant_destinations.values()]:
        if destination is not None:
            logs.register_secret(destination.client_secret.get_secret_value())


class Worker:
    """Start with ``await worker.start()``; stop with ``await worker.stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.connection: AbstractRobustConnection | None = None
        self.http: aiohttp.ClientSession | None = None
        self.tokens: TokenCache | None = None
        self.consumer: CommandConsumer | None = None
        self.http_port: int | None = None
        self._subscriptions: list[tuple[AbstractQueue, str]] = []
        self._health: web.AppRunner | None = None
        self._assigner: ShardAssigner | None = None

    async def start(self) -> None:
        s = self.settings
        register_settings_secrets(s)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.dms_connections),
            headers={"User-Agent": s.user_agent},
        )
        self.tokens = TokenCache(self.http, on_fetch=self.metrics.token_fetches.inc)
        clients = DmsClients(s, self.http, self.tokens, self.metrics.observe_dms_request)
        handlers = Handlers(s, clients, TenantRepositories(), self.http)

        self.connection = await aio_pika.connect_robust(s.amqp_url.get_secret_value())
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=s.prefetch)
        declared = await topology.declare(channel, s)
        self.consumer = CommandConsumer(s, channel, handlers, ResultPublisher(declared.result_exchange), self.metrics)
        self._assigner = ShardAssigner(
            channel,
            f"{s.command_queue}.members",
            declared.shard_queues,
            self.consumer.on_message,
            self.consumer.in_flight_from,
            heartbeat_s=s.membership_heartbeat_s,
        )
        await self._assigner.start()
        router_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await router_channel.set_qos(prefetch_count=s.router_prefetch)
        router = ShardRouter(router_channel, s.command_queue, s.shard_count)
        ingress = await router_channel.get_queue(s.command_queue)
        self._subscriptions.append((ingress, await ingress.consume(router.route)))
        if s.http_port is not None:
            checks = health.HealthChecks(consuming=self.consuming, token_obtainable=self.check_token)
            self._health, self.http_port = await start_site(
                health.make_app(checks, self.metrics), s.http_host, s.http_port
            )
        log.info(
            "worker_started", queue=s.command_queue, shards=s.shard_count, prefetch=s.prefetch, http_port=self.http_port
        )

    def consuming(self) -> bool:
        return (
            bool(self._subscriptions)
            and self.connection is not None
            and not self.connection.is_closed
            and self.connection.connected.is_set()
        )

    async def check_token(self) -> None:
        """Readiness: a token for the default destination (or the first tenant's) can be had."""
        s = self.settings
        destination = s.destination or next(iter(s.tenant_destinations.values()), None)
        if destination is not None and self.tokens is not None:
            await self.tokens.get(destination)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking messages, let in-flight ones finish within the grace period, requeue the rest, close."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        if self._assigner is not None:
            await self._assigner.release_all()  # heartbeats go on: nobody takes our shards while we drain
        subscriptions, self._subscriptions = self._subscriptions, []
        for queue, tag in subscriptions:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # connection already gone: nothing more will arrive anyway
                log.info("consumer_cancel_failed", error=repr(exc))
        if self.consumer is not None and self.consumer.in_flight:
            log.info("draining", in_flight=len(self.consumer.in_flight), grace_s=grace)
            _done, pending = await asyncio.wait(set(self.consumer.in_flight), timeout=grace)
            for task in pending:  # each nack-requeues its message as it is cancelled
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._assigner is not None:
            await self._assigner.stop()
        if self._health is not None:
            await self._health.cleanup()
        if self.connection is not None:
            await self.connection.close()
        if self.http is not None:
            await self.http.close()
        log.info("worker_stopped")
