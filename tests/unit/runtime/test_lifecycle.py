"""The worker's lifecycle is one ordered stack: ``stop`` releases every part once, in reverse order of start,
and a start that fails or is cancelled half-way releases what it had opened, and nothing twice. The broker
connection, topology, intake and assigner are fakes writing to a journal (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker.amqp import topology
from worker.amqp.topology import Topology
from worker.commands.spool import Spool
from worker.runtime import app
from worker.runtime.app import Worker
from worker.settings import Settings

Journal = list[str]


class FakeConnection:
    def __init__(self, journal: Journal, channel_hangs: bool, name: str = "connection") -> None:
        self.journal, self.channel_hangs, self.name = journal, channel_hangs, name
        self.reconnect_callbacks: set[Any] = set()
        self.close_callbacks: set[Any] = set()
        self.channel_asked = asyncio.Event()
        self.is_closed = False
        self.connected = asyncio.Event()
        self.connected.set()

    async def channel(self, **_options: Any) -> object:
        self.channel_asked.set()
        if self.channel_hangs:
            await asyncio.Event().wait()
        return object()

    async def close(self) -> None:
        self.journal.append(f"{self.name} closed")
        self.is_closed = True
        self.connected.clear()


class FakeExchange:
    name = "results"


class FakeIntake:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.dispatcher = type("Dispatcher", (), {"running": 0})()
        self.reading_paused = False

    async def start(self) -> None:
        self.journal.append("intake started")

    async def stop(self, grace_s: float) -> None:
        self.journal.append(f"intake stopped, grace {grace_s}")

    async def take(self, number: int) -> None: ...

    async def release(self, number: int) -> None: ...

    def in_flight(self, number: int) -> int:
        return 0

    def backlog(self) -> dict[int, int]:
        return {}

    def loads(self) -> dict[int, Any]:
        return {}


class FakeAssigner:
    me = "fake-member"

    def __init__(self, journal: Journal, fails: bool) -> None:
        self.journal, self.fails = journal, fails

    async def start(self) -> None:
        if self.fails:
            raise ConnectionError("assigner could not declare its exchange")
        self.journal.append("assigner started")

    async def release_all(self) -> None:
        self.journal.append("shards released")

    async def stop(self) -> None:
        self.journal.append("assigner stopped")

    def connection_lost(self) -> None: ...

    def connection_restored(self) -> None: ...


class FakeCensus:
    def __init__(self, *_args: Any) -> None: ...

    async def start(self) -> None: ...


class Rig:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **faults: bool) -> None:
        self.journal: Journal = []
        self.connection = FakeConnection(self.journal, faults.get("channel_hangs", False))

        async def connect_robust(_urls: Any, transport_factory: Any = None) -> FakeConnection:
            if transport_factory is not None:  # the shard subscriptions' own connection
                self.journal.append("intake connected")
                return FakeConnection(self.journal, False, "intake connection")
            self.journal.append("connected")
            return self.connection

        async def declare(_channel: Any, settings: Settings) -> Topology:
            if faults.get("topology_fails"):
                raise RuntimeError("x-modulus-hash exchange type missing")
            return Topology([f"{settings.command_queue}.shard.0"], FakeExchange())  # type: ignore[arg-type]

        spool_close, http_close = Spool.close, aiohttp.ClientSession.close

        def close_spool(spool: Spool) -> None:
            self.journal.append("spool closed")
            spool_close(spool)

        async def close_http(session: aiohttp.ClientSession) -> None:
            self.journal.append("http closed")
            await http_close(session)

        monkeypatch.setattr(app, "connect_robust", connect_robust)
        monkeypatch.setattr(topology, "declare", declare)
        monkeypatch.setattr(app, "ShardConsumers", lambda *_a, **_k: FakeIntake(self.journal))
        monkeypatch.setattr(
            app, "ShardAssigner", lambda *_a, **_k: FakeAssigner(self.journal, faults.get("assigner_fails", False))
        )
        monkeypatch.setattr(app, "CensusResponder", FakeCensus)
        monkeypatch.setattr(Spool, "close", close_spool)
        monkeypatch.setattr(aiohttp.ClientSession, "close", close_http)
        settings = Settings(_env_file=None, http_port=None, spool_dir=tmp_path / "spool", shard_count=1)
        self.worker = Worker(settings)


CLOSED_AFTER_THE_CONNECTION = ["intake connection closed", "connection closed", "http closed", "spool closed"]


class TestLifecycle:
    """Each part released once, in reverse order: also after a half-way start."""

    async def test_stop_releases_in_reverse_order_draining_while_heartbeats_go_on(self, monkeypatch, tmp_path):
        rig = Rig(monkeypatch, tmp_path)
        await rig.worker.start()
        assert rig.worker.consuming() and rig.worker.parts.concurrency.limit == rig.worker.settings.in_flight_limit
        assert rig.journal == ["connected", "intake connected", "intake started", "assigner started"]
        await rig.worker.stop(grace_s=0.5)
        assert rig.journal[4:] == [
            "shards released",
            "intake stopped, grace 0.5",
            "assigner stopped",
            *CLOSED_AFTER_THE_CONNECTION,
        ]
        assert not rig.worker.consuming()
        await rig.worker.stop()  # a second stop releases nothing again
        assert len(rig.journal) == 11
        assert not any((tmp_path / "spool").iterdir())  # the spool directory is gone

    async def test_a_start_failing_at_the_assigner_stops_the_intake_and_closes_the_rest(self, monkeypatch, tmp_path):
        rig = Rig(monkeypatch, tmp_path, assigner_fails=True)
        with pytest.raises(ConnectionError, match="assigner"):
            await rig.worker.start()
        assert rig.journal == [
            "connected",
            "intake connected",
            "intake started",
            "intake stopped, grace 0",
            *CLOSED_AFTER_THE_CONNECTION,
        ]
        with pytest.raises(RuntimeError, match="not started"):
            rig.worker.parts  # noqa: B018
        await rig.worker.stop()  # what start released is not released again
        assert rig.journal.count("connection closed") == 1 and rig.journal.count("spool closed") == 1

    async def test_a_start_failing_at_the_topology_closes_connection_session_and_spool(self, monkeypatch, tmp_path):
        rig = Rig(monkeypatch, tmp_path, topology_fails=True)
        with pytest.raises(RuntimeError, match="x-modulus-hash"):
            await rig.worker.start()
        assert rig.journal == ["connected", "intake connected", *CLOSED_AFTER_THE_CONNECTION]
        assert not rig.worker.consuming()

    async def test_a_start_cancelled_half_way_closes_what_it_had_opened(self, monkeypatch, tmp_path):
        rig = Rig(monkeypatch, tmp_path, channel_hangs=True)
        starting = asyncio.create_task(rig.worker.start())
        await rig.connection.channel_asked.wait()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert rig.journal == ["connected", "intake connected", *CLOSED_AFTER_THE_CONNECTION]
