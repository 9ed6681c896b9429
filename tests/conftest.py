"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.emulator import EmulatorConfig, RunningEmulator, serve_emulator


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """The DMS emulator on a real loopback socket, fresh for each test."""
    async with serve_emulator(EmulatorConfig()) as running:
        yield running
