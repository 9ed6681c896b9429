"""Chaos: replicas SIGKILLed and started again while uploads and deletes for many documents flow; and the
strong run of issue 26 (3 replicas, SIGKILL and SIGTERM every few seconds, 20 % DMS 5xx, 300 uploads)."""

from __future__ import annotations

import signal
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from worker.commands.known_documents import command_marker
from worker.contracts import Command, DeleteCommand
from worker.producer import UPSTREAM_SOURCE, delete_command, upload_command

from .chaos import CHAOS_SETTINGS, HEADER, ChaosPlan, run_chaos
from .conftest import StackFactory
from .replicas import Replicas

pytestmark = pytest.mark.integration

DOCUMENTS, COMMANDS_PER_DOCUMENT = 20, 10


def workload(tenant: uuid.UUID) -> tuple[list[uuid.UUID], list[Command]]:
    """20 documents x 10 commands, interleaved; every fourth command of a document is a delete."""
    documents = [uuid.uuid4() for _ in range(DOCUMENTS)]
    commands: list[Command] = []
    for step in range(COMMANDS_PER_DOCUMENT):
        for n, doc in enumerate(documents):
            if step % 4 == 3:
                commands.append(delete_command(tenant, doc))
            else:
                commands.append(upload_command(tenant, doc, "c.txt", "text/plain", f"{n}:{step}".encode()))
    return documents, commands


@pytest.mark.timeout(300)
async def test_replicas_killed_and_restarted_keep_order_and_write_each_command_once(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    stack = await make_stack(shard_count=6, in_flight_limit=8, retry_delays_ms=[100, 200, 400, 800, 1600])
    await stack.worker.stop()
    tenant = uuid.uuid4()
    documents, commands = workload(tenant)
    replicas = Replicas(stack.settings, tmp_path)
    replicas.start(2)
    events: list[dict[str, Any]] = []
    try:
        await stack.set_faults(latency_ms=15)
        for command in commands:
            await stack.send(command)
        for victim in (0, 1, 0):  # kill one mid-run, start a fresh one; then the other; then again
            events += await stack.next_events(30, timeout=90)
            replicas.signal(victim, signal.SIGKILL)
            replicas.processes[victim].wait()
            replicas.restart(victim)
        wanted = {c.id for c in commands}
        await stack.events_for(wanted, events, within=180)
        assert wanted <= {e["data"]["command_id"] for e in events}, "commands without a result"
    finally:
        replicas.stop_all()

    outcomes: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        assert event["type"] in {"dms.upload.succeeded", "dms.delete.succeeded"}, event
        outcomes[event["data"]["command_id"]].add((event["type"], str(event["data"].get("object_id"))))
    assert all(len(o) == 1 for o in outcomes.values()), "a repeated event named another version"

    repo = stack.repository(tenant)
    content = stack.emulator.emulator.state.content
    for n, doc in enumerate(documents):
        mine = [c for c in commands if c.data.document_id == doc]
        last_delete = max(i for i, c in enumerate(mine) if isinstance(c, DeleteCommand))
        expected = [f"{n}:{step}".encode() for step in range(last_delete + 1, COMMANDS_PER_DOCUMENT)]
        series = repo.series_by_name.get(str(doc))
        versions = series.versions if series else []
        assert [content.get(v.content_id) for v in versions] == expected  # in publish order, none twice
        assert [v.label for v in versions] == [f"{i}.0" for i in range(1, len(expected) + 1)]
        markers = [v.description for v in versions]
        assert len(set(markers)) == len(markers)
        assert set(markers) <= {command_marker(UPSTREAM_SOURCE, c.id) for c in mine}
        # Deleted versions too (DMS's recycle bin keeps them): every upload written exactly once.
        ever = [
            v.description
            for s in [*repo.recycle_bin, *([series] if series else [])]
            if s.name == str(doc)
            for v in s.versions
        ]
        uploads = [command_marker(UPSTREAM_SOURCE, c.id) for c in mine if not isinstance(c, DeleteCommand)]
        assert sorted(m for m in ever if m is not None) == sorted(uploads), "an upload written twice or never"
    assert not await stack.dead_letters()


@pytest.mark.timeout(420)
@pytest.mark.xdist_group("wide-topology")  # 128 quorum queues (~380 of the broker's descriptors): never two at once
async def test_replicas_killed_and_stopped_while_dms_fails_keep_every_document_in_publish_order(
    make_stack: StackFactory, tmp_path: Path, record_property: Any
) -> None:
    stack = await make_stack(**CHAOS_SETTINGS)
    report = await run_chaos(stack, ChaosPlan(seed=26), tmp_path)
    record_property("chaos", f"{HEADER}\n{report.row()}")
    assert report.kills >= 5 and report.terms >= 1, report
    assert not report.lost, report
    assert not report.conflicting, report
    assert not report.written_twice, report
    assert not report.out_of_order, report
    assert report.succeeded + report.failed == report.commands == 300
