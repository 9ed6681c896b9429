"""The replica's lease on its shards: it holds while the replica hears the broker.

A replica cut off from the broker (the link silent, not closed) keeps its subscriptions in its own eyes until
its AMQP heartbeats time out, while the broker, after its own heartbeat timeout, closes the connection and
hands the shards' deliveries to another replica. Without a fence both would write the same documents. The
lease is that fence: every membership heartbeat that comes back through the broker (the replica's own
included, every ``MEMBERSHIP_HEARTBEAT_S``) renews it, and so does every command delivery (a burst of them,
as when a replica takes its shards, is read before the heartbeats queued behind it on the same connection,
and used to run the lease out with the link well); once nothing has come for ``LEASE_HEARTBEATS``
heartbeats, no DMS call of this replica starts until it hears the broker again, and a command whose delivery
was returned meanwhile stops without writing. The lease runs out (3 s by default) well before the broker
can hand a shard over (its heartbeat timeout, ``AMQP_HEARTBEAT_S``), which ``Settings`` checks.
"""

from __future__ import annotations

import time

from worker.settings import LEASE_HEARTBEATS


class BrokerLease:
    def __init__(self, heartbeat_s: float) -> None:
        self.duration_s = heartbeat_s * LEASE_HEARTBEATS
        self._heard = time.monotonic()

    def heard(self) -> None:
        self._heard = time.monotonic()

    def silent_for_s(self) -> float:
        return time.monotonic() - self._heard

    def holds(self) -> bool:
        return self.silent_for_s() <= self.duration_s
