"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.cluster.nodes import Cluster, started_nodes
from worker.testing.emulator import EmulatorConfig, RunningEmulator, serve_emulator

# CI explores the same examples every run (a failure there is reproducible); no deadlines on a busy box.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """The DMS emulator on a real loopback socket, fresh for each test."""
    async with serve_emulator(EmulatorConfig()) as running:
        yield running


@pytest.fixture(scope="session")
def lone_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A RabbitMQ node of the tests' own on port 5691, for tests that stop and start a broker: the machine's
    broker on 5672 may serve other programs and is never restarted."""
    shape = Cluster(Path(), port=5691, dist_port=25691, prefix="dmsr", size=1)
    yield from started_nodes(tmp_path_factory, "lone-broker", shape)


UNIT_TEST_TIMEOUT_S = 15  # unit tests take well under a second each: one that hangs fails at once


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests (no sockets, fakes and fake clocks) get a short timeout of their own; integration tests keep
    the 120 s of pytest's settings. A test's own ``timeout`` mark wins."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent / "unit") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TEST_TIMEOUT_S))
