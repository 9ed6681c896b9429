"""``python -m worker demo`` as a newcomer runs it: it works end to end and leaves no queue or exchange of its own
behind, also when ``--keep-running`` is ended with Ctrl+C. Four shards keep it cheap for the broker."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aio_pika
import pytest

from .conftest import AMQP_URL
from .test_cli import cli, environment, start_cli

# The demo declares fixed names (dms.demo.commands.*): its two tests run one after the other in one xdist process.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("demo")]

DEMO_ENV = {"DMS_WORKER_SHARD_COUNT": "4", "DMS_WORKER_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
REMOVED = "[demo] removed the demo's queues and exchanges (dms.demo.commands.*)"


async def assert_no_demo_topology() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for name in ("dms.demo.commands.shard.0", "dms.demo.commands.dlq"):
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).declare_queue(name, passive=True)
        for name in ("dms.demo.commands.upload", "dms.demo.results"):
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await connection.channel()).get_exchange(name, ensure=True)


@pytest.mark.timeout(120)
async def test_the_demo_runs_end_to_end_and_removes_its_topology(tmp_path: Path) -> None:
    outcome = await cli("demo", env=environment(**DEMO_ENV), cwd=tmp_path, timeout=90)
    assert outcome.code == 0, outcome.err
    lines = outcome.out.splitlines()
    assert any("first upload -> 1.0: dms.upload.succeeded" in line for line in lines), outcome.out
    assert any("renamed executable -> refused: dms.upload.failed" in line for line in lines), outcome.out
    assert lines[-2:] == [REMOVED, "[demo] done. Everything above ran against the DMS EMULATOR, not SAP DMS."]
    await assert_no_demo_topology()


@pytest.mark.timeout(120)
async def test_ctrl_c_ends_keep_running_without_a_traceback_and_removes_the_topology(tmp_path: Path) -> None:
    process = await start_cli("demo", "--keep-running", env=environment(**DEMO_ENV), cwd=tmp_path)
    assert process.stdout is not None
    try:
        seen: list[str] = []
        async with asyncio.timeout(90):
            while not seen or "keep running" not in seen[-1]:
                seen.append((await process.stdout.readline()).decode().rstrip())
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:  # failed: a demo left running would hold the demo's shards in the next test
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130 and "Traceback" not in err.decode(), err.decode()
    assert REMOVED in out.decode().splitlines()
    await assert_no_demo_topology()
