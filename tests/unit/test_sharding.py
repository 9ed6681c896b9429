from __future__ import annotations

import uuid
from collections import Counter

from worker.shard_assignment import owner_of, preferred_shards
from worker.sharding import shard_of


def test_shard_of_is_stable_and_spreads_documents() -> None:
    doc = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")
    assert shard_of(doc, 8) == shard_of(str(doc), 8) == shard_of(doc, 8)
    spread = Counter(shard_of(uuid.uuid4(), 8) for _ in range(8000))
    assert set(spread) == set(range(8)) and min(spread.values()) > 800
    assert shard_of(None, 8) == 0


def test_every_shard_has_exactly_one_owner_whoever_computes_it() -> None:
    members = {"a", "b", "c"}
    views = {m: preferred_shards(m, members - {m}, 16) for m in members}
    assert set().union(*views.values()) == set(range(16))
    assert sum(len(v) for v in views.values()) == 16
    assert all(views[m] == {s for s in range(16) if owner_of(s, members) == m} for m in members)


def test_a_leaving_member_only_moves_its_own_shards() -> None:
    before = {s: owner_of(s, {"a", "b", "c"}) for s in range(64)}
    after = {s: owner_of(s, {"a", "b"}) for s in range(64)}
    moved = {s for s in range(64) if before[s] != after[s]}
    assert moved == {s for s in range(64) if before[s] == "c"}


def test_alone_a_replica_owns_everything() -> None:
    assert preferred_shards("solo", set(), 8) == set(range(8))
