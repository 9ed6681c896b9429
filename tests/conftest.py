"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

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
