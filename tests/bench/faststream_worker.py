"""The FastStream worker that ``python -m tests.bench faststream`` measures this worker against. Not shipped:
it needs the ``bench`` extra (``pip install -e '.[dev,bench]'``) and lives only here.

Written the way FastStream's documentation writes a RabbitMQ consumer, not as a straw man: one durable quorum
queue bound to its own command exchange, competing consumers (run as many processes as you like) with a
prefetch of 64 (aiormq runs each delivery as its own task, so that is also how many uploads run at once),
the CloudEvent parsed into a pydantic model, one aiohttp session with a cached OAuth2 token, each tenant's
repository found or created once, CMIS createDocument in ROOT (checkOut / checkIn when the document exists),
and a result event published with publisher confirms. It does less than the worker on purpose (no retries
with backoff, dead-lettering, per-document order, idempotency, content by URL, tracing, metrics): what is left
is what a team would write in an afternoon.

    FASTSTREAM_WORKER_SERVICE_KEY='{"uri": ..., "uaa": {...}}' FASTSTREAM_WORKER_COMMAND_EXCHANGE=x.upload \\
    FASTSTREAM_WORKER_COMMAND_QUEUE=x.commands FASTSTREAM_WORKER_RESULT_EXCHANGE=x.results \\
        python -m tests.bench.faststream_worker

Commands reach it as the project's producer publishes them (``worker.producer.publish_command`` with the
exchange prefix such that ``<prefix>.upload`` is ``COMMAND_EXCHANGE``): the queue binds ``#``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from typing import Any, Literal

import aiohttp
from faststream import FastStream
from faststream.exceptions import NackMessage
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.message import RabbitMessage
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SOURCE = "urn:faststream-bench-worker"


class ServiceKey(BaseModel):
    class Uaa(BaseModel):
        clientid: str
        clientsecret: str
        url: str

    uri: str
    uaa: Uaa


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASTSTREAM_WORKER_")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    command_exchange: str = "faststream.commands.upload"
    command_queue: str = "faststream.commands"
    result_exchange: str = "faststream.results"
    queue_type: Literal["quorum", "classic"] = "quorum"
    prefetch: int = 64
    service_key: ServiceKey
    log_level: str = "WARNING"


# -- messages ----------------------------------------------------------------------------------------


class UploadData(BaseModel):
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    file_name: str
    mime_type: str
    content_base64: str
    size: int | None = None
    sha256: str | None = None


class UploadCommand(BaseModel):
    """A CloudEvent in structured mode; only what this worker reads is declared."""

    specversion: Literal["1.0"]
    id: str
    source: str
    type: Literal["dms.upload"]
    data: UploadData


class ResultEvent(BaseModel):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str = SOURCE
    type: str
    time: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    subject: str
    data: dict[str, Any]


# -- DMS -----------------------------------------------------------------------------------------------


class DmsError(Exception):
    def __init__(self, action: str, status: int, body: str) -> None:
        super().__init__(f"DMS {action} answered {status}: {body[:300]}")
        self.status = status


class Dms:
    """DMS over one aiohttp session: a cached token, cached repositories, the CMIS browser binding."""

    def __init__(self, key: ServiceKey) -> None:
        self.key = key
        self.base = key.uri if key.uri.endswith("/") else key.uri + "/"
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None  # value, monotonic time to renew at
        self._token_lock = asyncio.Lock()
        self._repositories: dict[uuid.UUID, tuple[str, str]] = {}  # tenant -> (repository id, root folder id)
        self._repository_locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Dms.open() runs on start-up"
        return self._session

    async def token(self) -> str:
        async with self._token_lock:  # one fetch for all the uploads that start together
            if self._token is None or time.monotonic() >= self._token[1]:
                auth = aiohttp.BasicAuth(self.key.uaa.clientid, self.key.uaa.clientsecret)
                async with self.session.post(
                    self.key.uaa.url.rstrip("/") + "/oauth/token", data={"grant_type": "client_credentials"}, auth=auth
                ) as response:
                    response.raise_for_status()
                    body = await response.json()
                self._token = (body["access_token"], time.monotonic() + float(body.get("expires_in", 3600)) - 60)
            return self._token[0]

    async def _request(self, action: str, method: str, path: str, ok: set[int], **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as response:
            text = await response.text()
            if response.status not in ok:
                raise DmsError(action, response.status, text)
            return response.status, json.loads(text) if text else None

    async def repository(self, tenant_id: uuid.UUID) -> tuple[str, str]:
        if tenant_id in self._repositories:
            return self._repositories[tenant_id]
        async with self._repository_locks.setdefault(tenant_id, asyncio.Lock()):
            if tenant_id not in self._repositories:
                self._repositories[tenant_id] = await self._find_or_create_repository(tenant_id)
        return self._repositories[tenant_id]

    async def _find_or_create_repository(self, tenant_id: uuid.UUID) -> tuple[str, str]:
        _, body = await self._request("listRepositories", "GET", "rest/v2/repositories", {200})
        infos = body.get("repoAndConnectionInfos", [])
        for info in [infos] if isinstance(infos, dict) else infos:  # one repository comes as an object
            repo = info.get("repository", info)
            if repo.get("externalId") == str(tenant_id):
                return repo["id"], repo["cmisRepositoryId"]
        spec = {
            "displayName": "SAP Cloud ALM for Implementation",
            "repositoryType": "internal",
            "externalId": str(tenant_id),
            "isVersionEnabled": True,
            "isVirusScanEnabled": True,
        }
        _, repo = await self._request(
            "createRepository", "POST", "rest/v2/repositories", {200, 201}, json={"repository": spec}
        )
        return repo["id"], repo["cmisRepositoryId"]

    async def _cmis(
        self, action: str, repo_id: str, fields: dict[str, str], file: tuple[bytes, str, str] | None = None
    ) -> tuple[int, Any]:
        form = aiohttp.FormData({"cmisaction": action, **fields, "succinct": "true"})
        if file is not None:
            content, file_name, mime_type = file
            form.add_field("content", content, filename=file_name, content_type=mime_type)
        return await self._request(action, "POST", f"browser/{repo_id}/root", {200, 201, 409}, data=form)

    async def upload(self, data: UploadData, content: bytes) -> tuple[str, dict[str, Any]]:
        """createDocument in ROOT named after the document id; a new major version if it exists already.
        Returns the repository id and the version's succinct properties."""
        repo_id, root = await self.repository(data.tenant_id)
        name, file = str(data.document_id), (content, data.file_name, data.mime_type)
        properties = {
            "objectId": root,
            "propertyId[0]": "cmis:name",
            "propertyValue[0]": name,
            "propertyId[1]": "cmis:objectTypeId",
            "propertyValue[1]": "cmis:document",
        }
        status, body = await self._cmis("createDocument", repo_id, properties, file)
        if status == 409:  # nameConstraintViolation: a later version of a document we know
            _, existing = await self._request(
                "getObjectByPath",
                "GET",
                f"browser/{repo_id}/root/{name}",
                {200},
                params={"cmisselector": "object", "succinct": "true"},
            )
            existing_id = existing["succinctProperties"]["cmis:objectId"]
            status, body = await self._cmis("checkOut", repo_id, {"objectId": existing_id})
            if status == 409:
                raise DmsError("checkOut", status, json.dumps(body))
            pwc = body["succinctProperties"]["cmis:objectId"]
            status, body = await self._cmis("checkIn", repo_id, {"objectId": pwc, "major": "true"}, file)
            if status == 409:
                raise DmsError("checkIn", status, json.dumps(body))
        return repo_id, body["succinctProperties"]


# -- the app -------------------------------------------------------------------------------------------


def decode_cloudevent(message: RabbitMessage) -> Any:
    """FastStream decodes ``application/json`` by itself; CloudEvents come as ``application/cloudevents+json``."""
    return json.loads(message.body)


def create_app(settings: WorkerSettings | None = None) -> FastStream:
    settings = settings or WorkerSettings()  # the service key comes from the environment
    logger = logging.getLogger("faststream_worker")
    logger.setLevel(settings.log_level)
    broker = RabbitBroker(settings.amqp_url, logger=logger)
    dms = Dms(settings.service_key)
    app = FastStream(broker, logger=logger, on_startup=[dms.open], after_shutdown=[dms.close])

    commands = RabbitExchange(settings.command_exchange, type=ExchangeType.TOPIC, durable=True)
    if settings.queue_type == "quorum":
        queue = RabbitQueue(settings.command_queue, queue_type=QueueType.QUORUM, durable=True, routing_key="#")
    else:
        queue = RabbitQueue(settings.command_queue, queue_type=QueueType.CLASSIC, durable=True, routing_key="#")
    results = RabbitExchange(settings.result_exchange, type=ExchangeType.TOPIC, durable=True)
    succeeded = broker.publisher(exchange=results, routing_key="upload.succeeded", persist=True)
    failed = broker.publisher(exchange=results, routing_key="upload.failed", persist=True)

    @broker.subscriber(queue, commands, channel=Channel(prefetch_count=settings.prefetch), decoder=decode_cloudevent)
    async def handle_upload(command: UploadCommand) -> None:
        data = command.data
        ids = {"command_id": command.id, "tenant_id": str(data.tenant_id), "document_id": str(data.document_id)}
        try:
            content = base64.b64decode(data.content_base64, validate=True)
            digest = hashlib.sha256(content).hexdigest()
            if (data.size is not None and data.size != len(content)) or data.sha256 not in (None, digest):
                raise ValueError("content does not match the declared size or sha256")
            repository_id, version = await dms.upload(data, content)
        except (ValueError, DmsError) as exc:  # permanent: say so and drop the command
            error = {"code": type(exc).__name__, "message": str(exc)}
            event = ResultEvent(type="dms.upload.failed", subject=str(data.document_id), data={**ids, "error": error})
            await failed.publish(event)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:  # transient: the broker delivers it again
            raise NackMessage(requeue=True) from exc
        event = ResultEvent(
            type="dms.upload.succeeded",
            subject=str(data.document_id),
            data={
                **ids,
                "repository_id": repository_id,
                "object_id": version["cmis:objectId"],
                "version_label": version.get("cmis:versionLabel"),
                "version_series_id": version.get("cmis:versionSeriesId"),
                "file_name": data.file_name,
                "size": len(content),
                "sha256": digest,
                "mime_type": data.mime_type,
            },
        )
        await succeeded.publish(event)

    return app


def main() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app()
    try:  # as `faststream run` does: uvloop when it is installed
        import uvloop
    except ImportError:
        asyncio.run(app.run())
    else:
        uvloop.run(app.run())


if __name__ == "__main__":
    main()
