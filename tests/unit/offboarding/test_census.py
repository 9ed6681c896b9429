"""The line that stops an offboarding while the tenant's commands are on their way (pure)."""

from __future__ import annotations

import uuid

from worker.offboarding.census import Census, refusal

TENANT = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")


def test_nothing_pending_nothing_refused() -> None:
    assert refusal(Census(replicas=3, answered=3, held=0, queued=0, queues=15, dead_letters=0), TENANT) is None
    assert refusal(Census(replicas=0, answered=0, held=0, queued=0, queues=15, dead_letters=0), TENANT) is None


def test_each_place_is_counted_in_the_one_line() -> None:
    line = refusal(Census(replicas=2, answered=2, held=3, queued=12, queues=15, dead_letters=2), TENANT)
    assert line is not None and "\n" not in line
    assert f"commands for tenant {TENANT} are pending: 3 held by the replicas" in line
    assert "up to 12 queued unread in the 15 shard queues its commands use (shared with other tenants)" in line
    assert "2 in the dead-letter queue" in line
    assert line.endswith("or add --force to offboard anyway (its later uploads fail as tenant_offboarded)")


def test_a_replica_that_did_not_answer_is_not_taken_for_an_idle_one() -> None:
    line = refusal(Census(replicas=3, answered=2, held=0, queued=0, queues=15, dead_letters=0), TENANT)
    assert line is not None and "1 of 3 replicas did not say what they hold" in line
