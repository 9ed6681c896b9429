"""Worker replicas as real OS processes (``python -m worker run``), configured like a deployment would be."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.environment import as_environment
from worker.settings import Settings


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMS_WORKER_")}
    env.update(as_environment(settings))
    env.update(DMS_WORKER_HTTP_PORT="0", DMS_WORKER_LOG_LEVEL="INFO")
    env["DMS_WORKER_MEMBERSHIP_LISTEN_HEARTBEATS"] = "2"  # they start beside each other: listen as in production
    return env


class Replicas:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self._env = environment(settings)
        self._log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            self.processes.append(self._spawn(f"replica-{len(self.processes)}"))

    def restart(self, index: int) -> None:
        """A fresh process in the place of one that ended (its log goes on in the same file)."""
        self.processes[index] = self._spawn(f"replica-{index}")

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        with (self._log_dir / f"{name}.log").open("ab") as log:  # the child keeps a descriptor of its own
            return subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self._env, stdout=log, stderr=log)

    async def started(self, index: int, within_s: float = 60) -> None:
        """Until replica ``index`` has logged its start (its SIGTERM handler is in place by then): a signal sent
        before that ends a process that never ran, as on a busy machine when the other replicas took every shard."""
        log = self._log_dir / f"replica-{index}.log"
        for _ in range(int(within_s / 0.1)):
            if b"worker_started" in log.read_bytes():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"replica {index} did not start within {within_s} s")

    def signal(self, index: int, sig: signal.Signals) -> None:
        self.processes[index].send_signal(sig)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
