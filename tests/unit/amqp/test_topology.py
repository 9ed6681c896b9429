"""Topology rules: the catch-all results queue is bounded by default (each bound can be switched off), and a
broker without the x-modulus-hash exchange type is one clear start-up error."""

from __future__ import annotations

from typing import Any

import aiormq
import pytest

from worker.amqp import topology
from worker.amqp.topology import results_queue_arguments
from worker.cli_errors import explain
from worker.settings import TopologySettings


def test_the_results_queue_drops_its_oldest_events_past_the_length_and_expires_them_after_a_week() -> None:
    arguments = results_queue_arguments(TopologySettings())
    assert arguments == {
        "x-queue-type": "quorum",
        "x-max-length": 100_000,
        "x-overflow": "drop-head",
        "x-message-ttl": 7 * 86_400 * 1000,
    }


def test_either_bound_can_be_switched_off() -> None:
    no_ttl = TopologySettings(results_queue_message_ttl_s=None, results_queue_max_length=500)
    assert results_queue_arguments(no_ttl) == {"x-queue-type": "quorum", "x-max-length": 500, "x-overflow": "drop-head"}
    unbounded = TopologySettings(results_queue_message_ttl_s=None, results_queue_max_length=None)
    assert results_queue_arguments(unbounded) == {"x-queue-type": "quorum"}


class BrokerWithoutThePlugin:
    async def declare_exchange(self, name: str, kind: str, **_: Any) -> None:
        raise aiormq.exceptions.ConnectionCommandInvalid(f"COMMAND_INVALID - unknown exchange type '{kind}'")


async def test_a_broker_without_the_modulus_hash_exchange_says_which_plugin_to_enable() -> None:
    with pytest.raises(topology.BrokerLacksFeature) as raised:
        await topology.declare(BrokerWithoutThePlugin(), TopologySettings())  # type: ignore[arg-type]
    assert "rabbitmq-plugins enable rabbitmq_sharding" in str(raised.value)
    line = str(explain(raised.value))
    assert "rabbitmq_sharding" in line and "\n" not in line
