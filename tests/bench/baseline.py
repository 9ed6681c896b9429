"""The deliberately plain baseline the benchmark compares against: one message at a time, blocking HTTP.

It does the same DMS work as the worker (cached token and repository, createDocument, or checkOut and
checkIn for a new version) but nothing concurrently: ``python -m tests.bench.baseline``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import aio_pika

from worker.amqp.names import MODULUS_HASH_EXCHANGE, command_exchange_name, shard_queue_name
from worker.dms.tokens import basic_auth_header
from worker.settings import Settings


def http(
    method: str, url: str, token: str | None, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{file_name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class PlainUploader:
    def __init__(self, settings: Settings) -> None:
        assert settings.destination is not None
        self.d = settings.destination
        self.token: str | None = None
        self.repos: dict[str, tuple[str, str]] = {}

    def get_token(self) -> str:
        if self.token is None:
            assert self.d.client_secret is not None, "the baseline speaks client-secret credentials only"
            form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
            request = urllib.request.Request(self.d.token_url, data=form, method="POST")
            request.add_header(
                "Authorization", basic_auth_header(self.d.client_id, self.d.client_secret.get_secret_value())
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self.token = json.loads(response.read())["access_token"]
        return self.token

    def repository(self, tenant: str) -> tuple[str, str]:
        if tenant not in self.repos:
            token = self.get_token()
            _, body = http("GET", self.d.url + "rest/v2/repositories", token)
            infos = json.loads(body)["repoAndConnectionInfos"]
            infos = [infos] if isinstance(infos, dict) else infos
            repo = next((i["repository"] for i in infos if i["repository"].get("externalId") == tenant), None)
            if repo is None:
                spec = {
                    "repository": {
                        "displayName": "SAP Cloud ALM for Implementation",
                        "repositoryType": "internal",
                        "externalId": tenant,
                        "isVersionEnabled": True,
                        "isVirusScanEnabled": True,
                    }
                }
                _, body = http(
                    "POST", self.d.url + "rest/v2/repositories", token, json.dumps(spec).encode(), "application/json"
                )
                repo = json.loads(body)
            self.repos[tenant] = (repo["id"], repo["cmisRepositoryId"])
        return self.repos[tenant]

    def upload(self, data: dict[str, Any]) -> dict[str, Any]:
        repo_id, root = self.repository(data["tenant_id"])
        token = self.get_token()
        url = f"{self.d.url}browser/{repo_id}/root"
        content = base64.b64decode(data["content_base64"])
        fields = {
            "cmisaction": "createDocument",
            "objectId": root,
            "propertyId[0]": "cmis:name",
            "propertyValue[0]": data["document_id"],
            "propertyId[1]": "cmis:objectTypeId",
            "propertyValue[1]": "cmis:document",
            "succinct": "true",
        }
        status, body = http("POST", url, token, *multipart(fields, data["file_name"], content))
        if status == 409:
            existing = re.search(r"with Id (\S+)", json.loads(body)["message"])
            assert existing is not None
            _, body = http(
                "POST",
                url,
                token,
                *multipart({"cmisaction": "checkOut", "objectId": existing.group(1), "succinct": "true"}, "", b""),
            )
            pwc = json.loads(body)["succinctProperties"]["cmis:objectId"]
            status, body = http(
                "POST",
                url,
                token,
                *multipart(
                    {"cmisaction": "checkIn", "objectId": pwc, "major": "true", "succinct": "true"},
                    data["file_name"],
                    content,
                ),
            )
        return dict(json.loads(body)["succinctProperties"])


async def main() -> None:
    settings = Settings()
    uploader = PlainUploader(settings)
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=1)
        uploads = command_exchange_name(settings.command_exchange, "upload")
        commands = await channel.declare_exchange(uploads, MODULUS_HASH_EXCHANGE, durable=True)
        results = await channel.declare_exchange(settings.result_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(shard_queue_name(settings.command_queue, 0), durable=True)
        await queue.bind(commands)  # the only queue bound: every upload lands here, one at a time
        async with queue.iterator() as messages:
            async for message in messages:
                command = json.loads(message.body)
                props = uploader.upload(command["data"])
                event = {
                    "type": "dms.upload.succeeded",
                    "data": {"command_id": command["id"], "object_id": props["cmis:objectId"]},
                }
                await results.publish(aio_pika.Message(json.dumps(event).encode()), routing_key="upload.succeeded")
                await message.ack()


if __name__ == "__main__":
    asyncio.run(main())
