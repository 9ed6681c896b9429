"""A broker that refuses to declare the topology for lack of resources stops the worker at start-up with one
line saying which queue, why, and what to do. The broker is a node of the test's own (``lone_broker``), whose
vhost gets a queue limit: the refusal RabbitMQ gives a topology it has no room for."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest

from tests.cluster.nodes import Cluster
from tests.environment import as_environment
from worker.amqp import topology

from .conftest import settings_for
from .test_cli import cli, environment

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.mark.timeout(120)
async def test_a_declare_refused_for_lack_of_resources_is_one_line(lone_broker: Cluster, tmp_path: Path) -> None:
    settings = settings_for(f"test.{uuid.uuid4().hex[:10]}", amqp_url=lone_broker.url(1), shard_count=4)
    await asyncio.to_thread(lone_broker.ctl, 1, "set_vhost_limits", "-p", "/", '{"max-queues": 3}')
    try:
        env = environment(**as_environment(settings)) | {"DMS_WORKER_HTTP_PORT": "0"}
        outcome = await cli("run", env=env, cwd=tmp_path, timeout=60)
        assert outcome.code == 1 and "Traceback" not in outcome.err, outcome.err
        errors = [line for line in outcome.err.splitlines() if not line.startswith("{")]  # not the JSON log
        assert errors == [
            f"error: the broker refused to declare queue {settings.command_queue}.shard.2 (PRECONDITION_FAILED - "
            f"cannot declare queue '{settings.command_queue}.shard.2': queue limit in vhost '/' (3) is reached): "
            "it lacks resources; a topology is SHARD_COUNT + 2 quorum queues, about 3 file descriptors each on "
            "RabbitMQ 3.10 (README, Broker capacity): remove unused ones with `python -m worker topology delete` "
            "or raise its limits"
        ]
    finally:
        await asyncio.to_thread(lone_broker.ctl, 1, "clear_vhost_limits", "-p", "/")
        connection = await aio_pika.connect(lone_broker.url(1))
        async with connection:
            await topology.delete_all(await connection.channel(), settings)
