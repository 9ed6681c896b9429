"""``balanced_owners``: who owns which shard, as every replica computes it; what a heartbeat says."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from worker.intake.ownership import ShardAssigner, balance_work, balanced_owners, shard_ranges


def members(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


@pytest.mark.parametrize(("shards", "replicas"), [(32, 1), (32, 3), (32, 5), (8, 3), (7, 7), (4, 6)])
def test_every_shard_has_one_owner_and_counts_differ_by_at_most_one(shards: int, replicas: int) -> None:
    fleet = members(replicas)
    owners = balanced_owners(shards, fleet)
    assert set(owners) == set(range(shards))
    counts = Counter(owners.values())
    held = [counts.get(m, 0) for m in fleet]
    assert min(held) in {shards // replicas, shards // replicas - 1 if shards < replicas else shards // replicas}
    assert max(held) - min(held) <= 1 and sum(held) == shards


def test_every_replica_computes_the_same_whatever_the_order() -> None:
    fleet = members(4)
    assert balanced_owners(32, fleet) == balanced_owners(32, list(reversed(fleet))) == balanced_owners(32, set(fleet))


def holding(owners: dict[int, str]) -> dict[str, set[int]]:
    held: dict[str, set[int]] = {}
    for shard, member in owners.items():
        held.setdefault(member, set()).add(shard)
    return held


def test_when_a_replica_leaves_only_its_own_shards_move() -> None:
    for _ in range(20):
        fleet = members(3)
        before = balanced_owners(32, fleet)
        after = balanced_owners(32, fleet[:2], holding(before))
        moved = {s for s in before if before[s] != after[s]}
        assert moved == {s for s in before if before[s] == fleet[2]}
        assert sorted(Counter(after.values()).values()) == [16, 16]


def test_when_a_replica_joins_only_its_share_moves() -> None:
    for replicas in (1, 2, 3, 5):
        fleet = members(replicas + 1)
        before = balanced_owners(32, fleet[:replicas])
        after = balanced_owners(32, fleet, holding(before))
        moved = {s for s in before if before[s] != after[s]}
        assert moved == {s for s in after if after[s] == fleet[-1]}
        assert len(moved) == 32 // (replicas + 1)


def test_what_everyone_holds_is_kept_as_it_is() -> None:
    fleet = members(3)
    settled = balanced_owners(32, fleet)
    assert balanced_owners(32, fleet, holding(settled)) == settled


def test_no_members_no_owners() -> None:
    assert balanced_owners(8, []) == {}


def work_of(owners: dict[int, str], backlog: dict[int, int]) -> Counter[str]:
    work: Counter[str] = Counter({member: 0 for member in owners.values()})
    for shard, member in owners.items():
        work[member] += backlog.get(shard, 0)
    return work


def test_a_replica_running_dry_gets_a_busy_shard_for_an_idle_one() -> None:
    fleet = members(3)
    owners = balanced_owners(30, fleet)
    # A burst landed in five queues, four of them held by the same replica; the third replica has none.
    first = fleet[0]
    busy = [*[s for s in sorted(owners) if owners[s] == first][:4], next(s for s in owners if owners[s] != first)]
    backlog = dict.fromkeys(busy, 300)
    balanced = balance_work(owners, backlog, low_water=64)
    assert Counter(balanced.values()) == Counter(owners.values())  # the counts stay floor/ceil
    assert sorted(work_of(balanced, backlog).values()) == [300, 300, 900]  # nobody is left without work
    assert sum(1 for s in owners if owners[s] != balanced[s]) == 2  # one swap: a busy shard for an idle one


def test_nothing_moves_while_every_replica_has_enough_queued() -> None:
    fleet = members(3)
    owners = balanced_owners(30, fleet)
    backlog: dict[int, int] = {}
    for member, depth in zip(fleet, (2000, 300, 70), strict=True):
        backlog[next(s for s in sorted(owners) if owners[s] == member)] = depth
    # Uneven, but each replica can fill its 64 slots: a swap would only cost a drain and a handover.
    assert balance_work(owners, backlog, low_water=64) == owners


def test_a_swap_that_barely_helps_is_not_made() -> None:
    fleet = members(2)
    owners = balanced_owners(8, fleet)
    heavy = fleet[0]
    backlog = {next(s for s in sorted(owners) if owners[s] == heavy): 150}
    # Moving the only busy queue would just move the gap: 150 on one side instead of the other.
    assert balance_work(owners, backlog, low_water=64) == owners


def test_even_work_moves_nothing() -> None:
    fleet = members(2)
    owners = balanced_owners(8, fleet)
    backlog = {s: 100 for s in owners}
    assert balance_work(owners, backlog, low_water=64) == owners
    assert balance_work(owners, {}, low_water=64) == owners


@pytest.mark.parametrize(
    ("shards", "text"),
    [([], ""), ([3], "3"), ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"), (range(128), "0-127"), ([9, 2, 1, 2], "1-2,9")],
)
def test_shard_numbers_in_a_log_line_are_folded_into_runs(shards: list[int], text: str) -> None:
    assert shard_ranges(shards) == text


async def test_a_heartbeat_carries_the_commands_running_per_tenant_when_asked() -> None:
    """For the operator console's fleet page; the others ignore it."""
    sent: list[dict[str, object]] = []

    class Exchange:
        async def publish(self, message: object, routing_key: str) -> None:
            sent.append(json.loads(message.body))  # type: ignore[attr-defined]

    async def nothing(shard: int) -> None:
        pass

    assigner = ShardAssigner(
        None,  # type: ignore[arg-type]
        "members",
        4,
        take=nothing,
        release=nothing,
        in_flight=lambda shard: 0,
        running=lambda: {"tenant-a": 3},
    )
    assigner._exchange = Exchange()  # type: ignore[assignment]
    await assigner._announce()
    assert sent[0]["running"] == {"tenant-a": 3} and sent[0]["holds"] == []


@pytest.mark.parametrize(("listen_heartbeats", "claimed"), [(2.0, []), (0.0, [0, 1, 2, 3])])
async def test_a_fresh_replica_listens_for_two_heartbeats_before_claiming_unless_told_otherwise(
    listen_heartbeats: float, claimed: list[int]
) -> None:
    """Production listens (to hear who else is here); the tests of a lone replica claim in the first round."""
    taken: list[int] = []

    async def take(shard: int) -> None:
        taken.append(shard)

    async def nothing(shard: int) -> None:
        pass

    assigner = ShardAssigner(
        None,  # type: ignore[arg-type]
        "members",
        4,
        take=take,
        release=nothing,
        in_flight=lambda shard: 0,
        heartbeat_s=60.0,
        listen_heartbeats=listen_heartbeats,
    )
    await assigner.rebalance()
    assert sorted(assigner._claims) == claimed and taken == []  # taken a round after the claim, as ever
