"""The producer's routing key: a tenant's documents use few lanes, a document always the same one."""

from __future__ import annotations

import uuid
from collections import Counter

from worker.amqp.routing import LANES, command_destination, lane_of, routing_key, tenant_of_routing_key
from worker.contracts import DELETE, UPLOAD

TENANT = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")


def test_a_document_always_has_the_same_key_whichever_command() -> None:
    doc = uuid.uuid4()
    upload_exchange, upload_key = command_destination("dms.commands", UPLOAD, TENANT, doc)
    delete_exchange, delete_key = command_destination("dms.commands", DELETE, TENANT, doc)
    assert upload_key == delete_key == routing_key(TENANT, doc)
    assert (upload_exchange, delete_exchange) == ("dms.commands.upload", "dms.commands.delete")


def test_the_lane_is_the_last_hex_digit_and_lanes_are_used_evenly() -> None:
    doc = uuid.UUID("f2a4d1c8-9c1e-4c55-8b7a-2d9e0f3b6a7c")
    assert LANES == 16 and lane_of(doc) == 0xC
    assert routing_key(TENANT, doc) == f"{TENANT}.12"
    spread = Counter(lane_of(uuid.uuid4()) for _ in range(16000))
    assert set(spread) == set(range(LANES)) and min(spread.values()) > 800


def test_the_tenant_is_read_back_for_bookkeeping_only() -> None:
    assert tenant_of_routing_key(f"{TENANT}.3") == str(TENANT)
    assert tenant_of_routing_key("upload") is None
    assert tenant_of_routing_key("") is None
