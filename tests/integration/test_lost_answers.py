"""DMS applies a call and its answer is lost on the network: per CMIS action and for the repository create.
Each case runs one tenant's commands over two documents (uploads and a delete) and checks the recorded
history: versions in publish order, one per command, one outcome per command, no working copy left."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from worker.contracts import Command
from worker.producer import delete_command, upload_command

from .conftest import Stack, StackFactory
from .history import check_history

pytestmark = pytest.mark.integration

RETRIES = [100, 200, 400, 800]


def lost(action: str, times: int = 1, **match: Any) -> dict[str, Any]:
    return {"kind": "lose_answer", "times": times, "path_prefix": "/browser", "action": action, **match}


CASES: dict[str, list[dict[str, Any]]] = {
    "createDocument": [lost("createDocument", times=2)],
    "checkOut": [lost("checkOut", times=2)],
    "checkIn": [lost("checkIn", times=2)],
    # A failed check-in makes the worker cancel its checkout; that answer is lost (the cancel took effect) ...
    "cancelCheckOut": [
        {"kind": "status", "status": 503, "path_prefix": "/browser", "action": "checkIn"},
        lost("cancelCheckOut"),
    ],
    # ... or the cancel never arrives: its working copy stays behind, and the next attempt must clear it.
    "cancelCheckOut dropped": [
        {"kind": "status", "status": 503, "path_prefix": "/browser", "action": "checkIn"},
        {"kind": "drop", "path_prefix": "/browser", "action": "cancelCheckOut"},
    ],
    "delete": [lost("delete")],
    "repository create": [{"kind": "lose_answer", "path_prefix": "/rest/v2/repositories", "method": "POST"}],
    "every call, by rate": [],  # lose_answer_rate below
}


def history_of_two_documents(tenant: uuid.UUID) -> list[Command]:
    one, two = uuid.uuid4(), uuid.uuid4()
    return [
        upload_command(tenant, one, "a.txt", "text/plain", b"one v1"),
        upload_command(tenant, two, "b.txt", "text/plain", b"two v1"),
        upload_command(tenant, one, "a.txt", "text/plain", b"one v2"),
        upload_command(tenant, two, "b.txt", "text/plain", b"two v2"),
        upload_command(tenant, one, "a.txt", "text/plain", b"one v3"),
        delete_command(tenant, two),
        upload_command(tenant, two, "b.txt", "text/plain", b"two again"),
        upload_command(tenant, one, "a.txt", "text/plain", b"one v4"),
    ]


@pytest.mark.parametrize("case", list(CASES))
async def test_a_lost_answer_leaves_one_version_per_command_in_order(make_stack: StackFactory, case: str) -> None:
    # By rate, an attempt of 3-5 calls loses one of their answers about half the time: with RETRIES' 5 attempts a
    # command then used them all (and was dead-lettered, as the policy says) about 1 time in 40, so 1 run in 5.
    # Twelve attempts leave that to about 1 run in 30,000; each lost answer is still met and retried.
    retries = [100] * 11 if case == "every call, by rate" else RETRIES
    stack: Stack = await make_stack(retry_delays_ms=retries)
    tenant = uuid.uuid4()
    if case == "every call, by rate":
        await stack.set_faults(lose_answer_rate=0.15, seed=7)
    else:
        await stack.set_faults(scripted=CASES[case])
    commands = history_of_two_documents(tenant)
    for command in commands:
        await stack.send(command)
    events: list[dict[str, Any]] = []
    await stack.events_for({c.id for c in commands}, events, within=30)
    verdict = check_history(commands, events, stack.emulator.emulator.state)
    assert verdict.ok and not verdict.failed, verdict
    assert stack.emulator.emulator.faults.injected >= 1  # the fault did fire
