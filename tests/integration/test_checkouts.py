"""Working copies in DMS: the worker cancels only its own (left by an attempt that crashed or lost its answer)
and waits for anyone else's check-in, however long its retries see the document locked."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from worker.producer import upload_command

from .conftest import StackFactory
from .history import check_history

pytestmark = pytest.mark.integration


async def test_a_checkout_someone_else_holds_is_waited_for_never_cancelled(make_stack: StackFactory) -> None:
    stack = await make_stack(retry_delays_ms=[300] * 12)
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    first = upload_command(tenant, doc, "a.txt", "text/plain", b"v1")
    await stack.run(first)
    state = stack.emulator.emulator.state
    repo = stack.repository(tenant)
    series = repo.series_by_name[str(doc)]
    theirs = state.check_out(repo, series.latest.object_id, "alice@example.com")  # a person, in DMS's own UI

    second = upload_command(tenant, doc, "a.txt", "text/plain", b"v2")
    calls = stack.emulator.emulator.calls
    looks_before = calls["versions"]
    await stack.send(second)
    for _ in range(100):  # attempts every 0.3 s meet the lock (result events carry outcomes only: none yet)
        if calls["versions"] - looks_before >= 3:
            break
        await asyncio.sleep(0.05)
    assert stack.events.empty()
    assert calls["versions"] - looks_before >= 3  # each attempt looked at DMS and found the lock
    assert series.pwc is theirs and series.checked_out_by == "alice@example.com"  # still hers

    state.check_in(repo, theirs.object_id, True, "alice's edit", None)  # she checks in: 2.0 is hers
    events: list[dict[str, Any]] = []
    await stack.events_for({second.id}, events, within=10)
    outcome = [e for e in events if e["type"] == "dms.upload.succeeded"]
    assert [e["data"]["version_label"] for e in outcome] == ["3.0"]
    assert [v.label for v in series.versions] == ["1.0", "2.0", "3.0"] and series.pwc is None


async def test_a_working_copy_of_its_own_is_cleared_at_once(make_stack: StackFactory) -> None:
    """Left by a replica that died between checkOut and checkIn; the next command of the document cancels it
    on its first attempt: the worker's user name is on it. The replica remembers the document as it left it
    (no working copy), so its checkOut meets a conflict its view does not explain: it looks again at once."""
    stack = await make_stack()
    tenant, doc = uuid.uuid4(), uuid.uuid4()
    first = upload_command(tenant, doc, "a.txt", "text/plain", b"v1")
    first_event = await stack.run(first)
    state, repo = stack.emulator.emulator.state, stack.repository(tenant)
    state.check_out(repo, repo.series_by_name[str(doc)].latest.object_id, stack.settings.dms_user)
    second = upload_command(tenant, doc, "a.txt", "text/plain", b"v2")
    second_event = await stack.run(second)
    assert second_event["type"] == "dms.upload.succeeded" and second_event["data"]["attempts"] == 1
    verdict = check_history([first, second], [first_event, second_event], state)
    assert verdict.ok and verdict.succeeded == 2, verdict
