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
# something fixed run one after the other in one process, one xdist group per thing they share. RabbitMQ nodes of
# the tests' own, by fixture: the 3-node cluster on ports 5681-5683, the lone node on 5691 (each session-scoped,
# so started once, in that process); every other ``cluster``-marked test (today: clusters in network namespaces
# of their own, tests/integration/netns.py) in a third group. Modules with fixed names of their own (the demo's
# topology) or a heavy load on the machine's broker (128 queues) mark their group themselves.
NODE_GROUPS = {"cluster": "cluster-nodes", "all_nodes_up": "cluster-nodes", "lone_broker": "lone-node"}
OTHER_NODES_GROUP = "namespaced-nodes"


def node_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that runs RabbitMQ nodes of its own, else None."""
    groups = {NODE_GROUPS[name] for name in getattr(item, "fixturenames", ()) if name in NODE_GROUPS}
    if len(groups) > 1:  # xdist would make a group of their own of them, run beside both: not allowed
        raise pytest.UsageError(f"{item.nodeid} uses the nodes of {sorted(groups)}: one test, one set of nodes")
    if not groups and item.get_closest_marker("cluster") is not None:
        groups = {OTHER_NODES_GROUP}
    return groups.pop() if groups else None


def runs_long(item: pytest.Item, config: pytest.Config) -> bool:
    """Grouped tests, and tests allowed more than pytest's default timeout: they start first, so that none of the
    longest starts last and holds up the end of a parallel run."""
    timeout = item.get_closest_marker("timeout")
    return item.get_closest_marker("xdist_group") is not None or (
        timeout is not None and float(timeout.args[0]) > float(config.getini("timeout"))
    )


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests (no sockets, fakes and fake clocks) get a short timeout of their own; integration tests keep
    the 120 s of pytest's settings. A test's own ``timeout`` mark wins. Tests of RabbitMQ nodes of the tests' own
    join their nodes' xdist group. The long tests go first (a stable sort: the rest keep their order)."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent / "unit") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TEST_TIMEOUT_S))
        group = node_group(item)
        if group is not None:
            if item.get_closest_marker("xdist_group") is not None:
                raise pytest.UsageError(f"{item.nodeid}: a test of broker nodes runs in their group, {group!r}")
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not runs_long(item, config))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """In a pytest-xdist process of a ``--dist loadgroup`` run, a grouped test's id must carry its group
    (``...@group``): that is all the scheduler goes by. Some pytest and pytest-xdist versions lose it without a
    word (pytest-xdist issue 1386); tests of the broker nodes would then run side by side: they fail instead."""
    if not getattr(item.config.option, "loadgroup", False) or item.get_closest_marker("xdist_group") is None:
        return
    if item.nodeid.rfind("@") <= item.nodeid.rfind("]"):  # no suffix after the parameters' brackets
        pytest.fail("pytest-xdist did not schedule this test by its xdist_group: run it with -n 0", pytrace=False)
