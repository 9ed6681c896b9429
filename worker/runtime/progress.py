"""Progress of long operator commands (the DLQ tools): a bar on a terminal, JSON lines when not a terminal.

Both write to stderr, so stdout keeps only the rows a script reads. JSON lines come at the start and end of
each stage and at most once per ``interval_s`` in between: ``{"stage": "replaying", "done": 12, "total": 200}``.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class JsonLinesProgress(AbstractContextManager["JsonLinesProgress"]):
    def __init__(self, stream: TextIO | None = None, interval_s: float = 1.0) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._stage: str | None = None
        self._total: int | None = None
        self._done = 0
        self._written: int | None = None  # the count last written
        self._last = 0.0

    def _write(self) -> None:
        line = {"stage": self._stage, "done": self._done, "total": self._total}
        print(json.dumps(line), file=self._stream or sys.stderr, flush=True)
        self._written, self._last = self._done, time.monotonic()

    def _finish_stage(self) -> None:
        if self._stage is not None and self._written != self._done:
            self._write()

    def start(self, stage: str, total: int | None) -> None:
        self._finish_stage()
        self._stage, self._total, self._done = stage, total, 0
        self._write()

    def advance(self, letter: object | None = None) -> None:
        self._done += 1
        if self._done == self._total or time.monotonic() - self._last >= self._interval_s:
            self._write()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._finish_stage()


class TerminalProgress(AbstractContextManager["TerminalProgress"]):
    """A rich progress bar per stage on stderr; rows printed to stdout meanwhile appear above the bars."""

    def __init__(self) -> None:
        self._bars = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            # Rows printed to stdout go above the bars when both share the terminal; piped, they are left alone.
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> TerminalProgress:
        self._bars.start()
        return self

    def start(self, stage: str, total: int | None) -> None:
        if self._task is not None:
            self._bars.stop_task(self._task)
        self._task = self._bars.add_task(stage, total=total)

    def advance(self, letter: object | None = None) -> None:
        if self._task is not None:
            self._bars.advance(self._task)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._bars.stop()


def progress_for(stream: TextIO) -> TerminalProgress | JsonLinesProgress:
    """A bar when ``stream`` (stderr) is a terminal, else JSON lines."""
    return TerminalProgress() if stream.isatty() else JsonLinesProgress(stream)
