"""How a replica splits its in-flight slots over the shard queues it holds (pure)."""

from __future__ import annotations

from worker.intake.slots import ShardLoad, Subscription, fair_split, prefetch_per_shard, share_moves, worth_changing


def test_fair_split_gives_nobody_more_than_it_can_use() -> None:
    assert fair_split(10, {"a": 100, "b": 2}) == {"a": 8, "b": 2}
    assert fair_split(10, {"a": 100, "b": 100}) == {"a": 5, "b": 5}
    assert fair_split(10, {"a": 3, "b": 3}) == {"a": 3, "b": 3}
    assert fair_split(10, {"a": 0, "b": 50}) == {"a": 0, "b": 10}


def test_fair_split_follows_weights() -> None:
    assert fair_split(12, {"a": 100, "b": 100}, {"a": 2.0}) == {"a": 8, "b": 4}
    assert sum(fair_split(7, {"a": 100, "b": 100, "c": 100}).values()) == 7


def test_a_tenant_alone_gets_the_whole_limit_over_its_busy_queues() -> None:
    loads = {s: ShardLoad(waiting=1000, in_flight=0, tenant="A") for s in range(7)}
    loads |= {s: ShardLoad(0, 0) for s in range(7, 32)}
    split = prefetch_per_shard(64, loads)
    assert sum(split[s] for s in range(7)) == 64
    assert all(split[s] == 0 for s in range(7, 32))  # under full load idle queues wait for the next look
    assert sum(split.values()) == 64


def test_a_second_tenant_gets_its_share_however_large_the_first_backlog() -> None:
    loads = {s: ShardLoad(waiting=5000, in_flight=9, tenant="A") for s in range(7)}
    loads[9] = ShardLoad(waiting=40, in_flight=1, tenant="B")
    split = prefetch_per_shard(64, loads)
    assert split[9] == 32 and sum(split[s] for s in range(7)) == 32


def test_a_tenant_with_little_work_takes_only_what_it_needs() -> None:
    loads = {s: ShardLoad(waiting=5000, in_flight=9, tenant="A") for s in range(7)}
    loads[9] = ShardLoad(waiting=0, in_flight=1, tenant="B")
    split = prefetch_per_shard(64, loads)
    assert split[9] == 1 and sum(split[s] for s in range(7)) == 63


def test_spare_slots_give_idle_queues_one_each_then_go_to_every_queue() -> None:
    loads = {0: ShardLoad(2, 0, "A"), 1: ShardLoad(0, 0), 2: ShardLoad(0, 0)}
    assert prefetch_per_shard(10, loads) == {0: 4, 1: 3, 2: 3}
    assert prefetch_per_shard(8, {s: ShardLoad(0, 0) for s in range(4)}) == dict.fromkeys(range(4), 2)
    assert prefetch_per_shard(2, {s: ShardLoad(0, 0) for s in range(4)}) == {0: 1, 1: 1, 2: 0, 3: 0}


def test_the_shares_never_add_up_to_more_than_the_limit() -> None:
    loads = {s: ShardLoad(waiting=s % 3, in_flight=s % 2, tenant=f"t{s % 5}") for s in range(64)}
    for limit in (1, 5, 16, 64, 200):
        assert sum(prefetch_per_shard(limit, loads).values()) <= limit


def test_small_changes_are_not_worth_resubscribing() -> None:
    assert not worth_changing(8, 8)
    assert not worth_changing(9, 8)
    assert worth_changing(9, 4)
    assert worth_changing(1, 2)
    assert worth_changing(0, 1) and worth_changing(1, 0)


def after(queues: dict[int, Subscription], moves: dict[int, int]) -> dict[int, Subscription]:
    return {n: Subscription(moves.get(n, q.prefetch), q.in_flight, q.waiting) for n, q in queues.items()}


def test_a_busy_queue_whose_share_covers_its_work_is_not_drained_to_grow() -> None:
    # Spare slots would give queue 0 seven, but its three commands are all in flight already.
    queues = {0: Subscription(5, 3, 0), 1: Subscription(5, 2, 0), 2: Subscription(5, 0, 0), 3: Subscription(5, 0, 0)}
    moves = share_moves(20, queues, {0: 7, 1: 6, 2: 4, 3: 3})
    assert 0 not in moves and 1 not in moves


def test_a_busy_queue_with_more_work_than_its_share_grows_into_idle_queues_slots() -> None:
    queues = {0: Subscription(5, 5, 200), 1: Subscription(5, 0, 0), 2: Subscription(5, 0, 0), 3: Subscription(5, 0, 0)}
    targets = prefetch_per_shard(20, {0: ShardLoad(200, 5), 1: ShardLoad(0, 0), 2: ShardLoad(0, 0), 3: ShardLoad(0, 0)})
    moves = share_moves(20, queues, targets)
    assert moves == {1: 0, 2: 0, 3: 0, 0: 20}


def test_a_busy_queue_is_shrunk_only_when_another_needs_the_room() -> None:
    # Nothing waits behind queue 0's last 12 commands: shrinking it delays nothing, and the idle queue
    # gets the slots free now.
    queues = {0: Subscription(20, 12, 0), 1: Subscription(0, 0, 0)}
    assert share_moves(20, queues, {0: 12, 1: 8}) == {0: 12, 1: 8}
    queues = {0: Subscription(20, 20, 500), 1: Subscription(0, 0, 0)}
    assert share_moves(20, queues, {0: 20, 1: 0}) == {}
    # A command arrives in queue 1 (another tenant): queue 0 gives up one slot once its messages settle.
    queues[1] = Subscription(0, 0, 1)
    targets = prefetch_per_shard(20, {0: ShardLoad(500, 20, "a"), 1: ShardLoad(1, 0, "b")})
    assert targets == {0: 19, 1: 1}
    assert share_moves(20, queues, targets) == {0: 19}


def test_only_as_many_busy_queues_shrink_as_the_room_wanted() -> None:
    queues = {n: Subscription(5, 5, 100) for n in range(4)} | {4: Subscription(0, 0, 3)}
    moves = share_moves(20, queues, {0: 4, 1: 4, 2: 4, 3: 4, 4: 4})
    assert len([n for n in moves if n < 4]) == 3  # three slots come from three queues, each one slot
    assert 4 not in moves  # nothing is free yet: it gets its share once the shrinking queues settle


def test_moves_never_promise_more_slots_than_the_limit() -> None:
    queues = {0: Subscription(10, 10, 50), 1: Subscription(10, 2, 50), 2: Subscription(0, 0, 50)}
    targets = {0: 4, 1: 8, 2: 8}
    for _ in range(6):  # rounds, with the in-flight messages settling between them
        moves = share_moves(20, queues, targets)
        queues = after(queues, moves)
        assert sum(max(q.prefetch, q.in_flight) for q in queues.values()) <= 20
        queues = {n: Subscription(q.prefetch, min(q.in_flight, q.prefetch), q.waiting) for n, q in queues.items()}
    assert {n: q.prefetch for n, q in queues.items()} == targets


def test_an_idle_queue_that_gets_work_under_full_load_takes_the_headroom_at_once() -> None:
    queues = {0: Subscription(20, 20, 500), 1: Subscription(0, 0, 1)}
    targets = prefetch_per_shard(20, {0: ShardLoad(500, 20, "a"), 1: ShardLoad(1, 0, "b")})
    # Queue 0 gives up a slot once its messages settle; queue 1 need not wait for that.
    assert share_moves(20, queues, targets, headroom=1) == {0: 19, 1: 1}
    # While the headroom is in use, a second queue that gets work waits for the drain as before.
    queues = {0: Subscription(19, 20, 500), 1: Subscription(1, 1, 0), 2: Subscription(0, 0, 1)}
    targets = prefetch_per_shard(20, {0: ShardLoad(500, 20, "a"), 1: ShardLoad(0, 1, "b"), 2: ShardLoad(1, 0, "c")})
    moves = share_moves(20, queues, targets, headroom=1)
    assert 2 not in moves and moves[0] < 19
    after_moves = after(queues, moves)
    assert sum(max(q.prefetch, q.in_flight) for q in after_moves.values()) <= 21
