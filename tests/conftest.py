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

# The suite runs on several processes (pytest-xdist, ``--dist loadgroup``: deploy/dev.sh test). Tests that share
# something fixed run one after the other in one process, by group: the RabbitMQ nodes of the tests' own (the
# 3-node cluster on 5681-5683, the lone node on 5691, the clusters in network namespaces: every ``cluster``-marked
# test and every user of those fixtures), which the session-scoped fixtures then start once. Modules with fixed
# names of their own (the demo's topology) or a heavy load on the machine's broker say so with
# ``pytest.mark.xdist_group`` themselves.
BROKER_NODES_GROUP = "broker-nodes"
BROKER_NODE_FIXTURES = {"lone_broker", "cluster", "all_nodes_up"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests (no sockets, fakes and fake clocks) get a short timeout of their own; integration tests keep
    the 120 s of pytest's settings. A test's own ``timeout`` mark wins. Tests of the RabbitMQ nodes of the tests'
    own join one xdist group."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent / "unit") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TEST_TIMEOUT_S))
        uses_nodes = BROKER_NODE_FIXTURES & set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("cluster") is not None or uses_nodes:
            if item.get_closest_marker("xdist_group") is not None:
                raise pytest.UsageError(f"{item.nodeid}: a test of the broker nodes runs in {BROKER_NODES_GROUP!r}")
            item.add_marker(pytest.mark.xdist_group(BROKER_NODES_GROUP))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """In a pytest-xdist process of a ``--dist loadgroup`` run, a grouped test's id must carry its group
    (``...@group``): that is all the scheduler goes by. Some pytest and pytest-xdist versions lose it without a
    word (pytest-xdist issue 1386); tests of the broker nodes would then run side by side: they fail instead."""
    if not getattr(item.config.option, "loadgroup", False) or item.get_closest_marker("xdist_group") is None:
        return
    if item.nodeid.rfind("@") <= item.nodeid.rfind("]"):  # no suffix after the parameters' brackets
        pytest.fail("pytest-xdist did not schedule this test by its xdist_group: run it with -n 0", pytrace=False)
