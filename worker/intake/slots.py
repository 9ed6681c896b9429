"""How a replica spreads its in-flight slots over the shard queues it holds (pure, no I/O).

A shard queue is first-in first-out, so fairness between tenants comes from two places: which queue a
command lands in (a tenant's commands use only its few lanes, see ``worker.amqp.routing``) and how many
deliveries each held queue may have outstanding, which this module decides. Tenants with work waiting share
the replica's in-flight limit by weight (max-min fair: nobody gets more than it can use, the rest goes to
the others); a tenant's share is split over its busy queues the same way. While slots are spare, idle
queues keep one each, so a command arriving there starts at once; under full load the first idle queue
that gets work takes one slot of headroom above the limit at the next look (no waiting for a busy queue to
drain), and a busy queue's shrink gives it back. The shares never add up to more than the limit plus that
headroom, so memory is bounded by configuration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", int, str)


@dataclass(frozen=True)
class ShardLoad:
    waiting: int  # ready messages in the queue, as last seen
    in_flight: int  # delivered to this replica and not yet settled
    tenant: str | None = None  # whose commands head this queue (last delivery seen); None: unknown

    @property
    def demand(self) -> int:
        return self.waiting + self.in_flight


def fair_split(limit: int, demands: Mapping[K, int], weights: Mapping[K, float] | None = None) -> dict[K, int]:
    """Weighted max-min fair split of ``limit`` whole slots: each key gets at most its demand; slots a key
    cannot use go to the others in proportion to weight. Ties are broken by key order, so every replica
    computes the same."""
    weights = weights or {}
    share: dict[K, int] = dict.fromkeys(demands, 0)
    open_keys = sorted((k for k, d in demands.items() if d > 0), key=repr)
    left = limit
    while left > 0 and open_keys:
        total_weight = sum(max(weights.get(k, 1.0), 1e-9) for k in open_keys)
        granted = 0
        for key in open_keys:
            quota = int(left * max(weights.get(key, 1.0), 1e-9) / total_weight)
            take = min(quota, demands[key] - share[key])
            share[key] += take
            granted += take
        if granted == 0:  # quotas rounded down to nothing: hand out single slots, heaviest first
            for key in sorted(open_keys, key=lambda k: (-weights.get(k, 1.0), repr(k))):
                if granted == left:
                    break
                share[key] += 1
                granted += 1
        left -= granted
        open_keys = [k for k in open_keys if share[k] < demands[k]]
    return share


def prefetch_per_shard(
    limit: int, loads: Mapping[int, ShardLoad], tenant_weights: Mapping[str, float] | None = None
) -> dict[int, int]:
    """Prefetch for each held shard, summing to at most ``limit``: tenants with work share the limit fairly,
    each tenant's share is split over its busy shards, and slots nobody needs go first to idle shards, one
    each (so a command arriving there starts at once), then evenly to all of them. Under full load an
    idle shard gets nothing and is looked at again on the next round."""
    by_tenant: dict[str, dict[int, int]] = defaultdict(dict)
    for shard, load in loads.items():
        if load.demand > 0:
            by_tenant[load.tenant or f"(shard {shard})"][shard] = load.demand
    tenant_share = fair_split(limit, {t: sum(d.values()) for t, d in by_tenant.items()}, tenant_weights)
    result: dict[int, int] = dict.fromkeys(loads, 0)
    for tenant, demands in by_tenant.items():
        result.update(fair_split(tenant_share[tenant], demands))
    idle = sorted(shard for shard in loads if loads[shard].demand == 0)
    spare = limit - sum(result.values())
    for shard in idle[:spare]:
        result[shard] = 1
    spare -= min(spare, len(idle))
    everyone = sorted(loads)
    for i, shard in enumerate(everyone):
        result[shard] += spare // len(everyone) + (1 if i < spare % len(everyone) else 0)
    return result


def worth_changing(current: int, target: int) -> bool:
    """Changing a queue's prefetch means re-subscribing (and, to shrink it, draining it first); skip
    changes too small to matter, but never leave a queue that should be served with nothing."""
    if target == current:
        return False
    if current == 0 or target == 0:
        return True
    return abs(target - current) >= max(1, current // 4)


@dataclass(frozen=True)
class Subscription:
    """A held queue as the replica sees it when it re-splits."""

    prefetch: int  # its share now (what it is subscribed with, or will be once a re-subscription is done)
    in_flight: int  # delivered and not yet settled
    waiting: int  # ready in the queue, as last seen
    changing: bool = False  # a re-subscription is under way: leave it be this round

    @property
    def committed(self) -> int:
        """Slots it may use: its share, or more while a larger earlier share's messages settle."""
        return max(self.prefetch, self.in_flight)


def share_moves(
    limit: int, queues: Mapping[int, Subscription], targets: Mapping[int, int], headroom: int = 0
) -> dict[int, int]:
    """The queues whose share should change now, and to what; the others keep theirs.

    Changing a share means re-subscribing, and a queue with messages in flight must drain first, which
    holds back the commands behind it for up to one DMS round trip. So a queue is only shrunk when others
    need the room (those with nothing waiting first), and only grown when it has more work than its share.
    Slots count as free only once they are: a shrinking queue's come free as its messages settle, so the
    shares in force never add up to more than ``limit``, except for ``headroom`` slots: an idle queue that
    got work while no slot is free takes one of them at once instead of waiting for a drain (the shrink that
    makes its room starts in the same round, and gives the headroom back once it settles).
    """
    committed = {n: q.committed for n, q in queues.items()}
    free = limit - sum(committed.values())

    def shortfall(n: int) -> int:
        """How many more slots the queue should get now (0: it keeps its share)."""
        queue, target = queues[n], targets[n]
        if queue.changing or target <= queue.prefetch or not worth_changing(queue.prefetch, target):
            return 0
        demand = queue.waiting + queue.in_flight
        if queue.prefetch == 0:  # an idle queue gets one slot while slots are spare
            return min(target, max(demand, 1))
        return max(0, min(target, demand) - queue.prefetch)  # more work than its share, else growing costs a drain

    short = {n: k for n in targets if (k := shortfall(n)) > 0}
    wanted = sum(short.values())
    moves: dict[int, int] = {}
    coming = 0  # slots that shrinking queues give up once their in-flight messages settle
    # Queues with nothing waiting first (their drain delays no command), then the largest surplus.
    surplus = [n for n, t in targets.items() if t < queues[n].prefetch and not queues[n].changing]
    for n in sorted(surplus, key=lambda n: (queues[n].waiting > 0, targets[n] - queues[n].prefetch, n)):
        if free + coming >= wanted:
            break
        target = moves[n] = targets[n]
        still_used = max(target, queues[n].in_flight)
        free += committed[n] - still_used
        coming += still_used - target
        committed[n] = still_used
    for n in sorted(short):
        grant = min(targets[n], committed[n] + max(0, free))
        if grant > queues[n].prefetch:
            used = max(grant, queues[n].in_flight)
            free -= used - committed[n]
            committed[n] = used
            moves[n] = grant
    over = sum(committed.values()) - limit
    for n in sorted(short):
        if over >= headroom:
            break
        if n not in moves and queues[n].prefetch == 0 and queues[n].waiting > 0:
            moves[n] = 1
            over += max(1, queues[n].in_flight) - committed[n]
            committed[n] = max(1, queues[n].in_flight)
    return moves
