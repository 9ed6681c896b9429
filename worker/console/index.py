"""The console's index of the DLQ: one small description per dead letter (no body, no headers), so that
groups, counts and filtered lists come from memory instead of from the broker.

RabbitMQ cannot be asked for "the dead letters of tenant T": a queue is read from its head. So the index is
built by one full pass over the DLQ (``DeadLetterQueue``: one message at a time, held until the pass ends,
then handed back in order) and then kept up to date without reading the queue again: a ``*.failed`` event
with ``dead_lettered: true`` adds its command (the worker publishes it after the DLQ copy is confirmed), and
the console's own replays and purges remove what they took. When the DLQ's depth (a passive declare every
few seconds) disagrees with the index, because something else changed the queue (the CLI, a crash loop the
broker dead-lettered itself), the index is rebuilt by another pass, at most every ``rescan_every_s``.

Passes, replays and purges never overlap (``turn``): a pass that runs while another holds messages would
see the queue without them and rotate its order when both hand back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from worker.results.dead_letters import DeadLetter, DeadLetterQueue, Selection, intern

log = structlog.get_logger(__name__)

KEPT_MESSAGE_LENGTH = 300  # of each error message in the index; the detail view reads the whole one


@dataclass
class Group:
    error_code: str | None
    tenant_id: str | None
    count: int
    oldest: dt.datetime | None
    newest: dt.datetime | None


@dataclass
class ScanState:
    running: bool = False
    done: int = 0
    total: int | None = None
    started: float = 0.0
    finished_at: dt.datetime | None = None
    took_s: float | None = None
    error: str | None = None


def letter_from_event(event: dict[str, object]) -> DeadLetter | None:
    """A dead letter as its ``*.failed`` event describes it, or ``None`` if the event is not about one (pure)."""
    data = event.get("data")
    failed = str(event.get("type", "")).endswith(".failed")
    if not isinstance(data, dict) or not data.get("dead_lettered") or not failed:
        return None
    raw_error = data.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    time_text = event.get("time")
    when = dt.datetime.fromisoformat(time_text) if isinstance(time_text, str) else None
    command_type = data.get("command_type") or str(event.get("type", "")).removesuffix(".failed")
    return DeadLetter(
        message_id=str(data.get("command_id")) if data.get("command_id") else None,
        command_type=intern(str(command_type)),
        tenant_id=intern(str(data["tenant_id"])) if data.get("tenant_id") else None,
        document_id=str(data["document_id"]) if data.get("document_id") else None,
        error_code=intern(str(error.get("code"))) if error.get("code") else None,
        error_message=_kept(str(error.get("message"))) if error.get("message") else None,
        attempts=int(data.get("attempts") or 1),
        first_death=None,  # not in the event; the next pass reads it from the headers
        last_death=when,
        replays=0,
    )


def _kept(message: str | None) -> str | None:
    return message[:KEPT_MESSAGE_LENGTH] if message else message


def _compact(letter: DeadLetter) -> DeadLetter:
    if letter.error_message is None or len(letter.error_message) <= KEPT_MESSAGE_LENGTH:
        return letter
    return dataclasses.replace(letter, error_message=_kept(letter.error_message))


class DeadLetterIndex:
    def __init__(
        self, queue: Callable[[ScanState | None], DeadLetterQueue], scan_limit: int, rescan_every_s: float = 30.0
    ) -> None:
        self._queue = queue  # a DeadLetterQueue telling the given state of its progress
        self._scan_limit = scan_limit
        self._rescan_every_s = rescan_every_s
        self._by_key: dict[str, DeadLetter] = {}  # in DLQ order; the key is the message id (#n for repeats)
        self._arrived: list[DeadLetter] = []  # events seen while a pass runs, added when it ends
        self.scan = ScanState()
        self.depth: int | None = None
        self.turn = asyncio.Lock()  # one pass, replay or purge at a time
        self._wanted = asyncio.Event()
        self._forced = False  # the operator asked for a pass (else a wake-up only checks the depth)
        self._last_pass = 0.0

    # --- reading ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def _letters(self) -> Iterable[DeadLetter]:
        return self._by_key.values()

    def _put(self, letter: DeadLetter) -> None:
        key = letter.message_id or f"#{len(self._by_key)}"
        while key in self._by_key:  # the same command dead-lettered twice: both are in the DLQ
            key = f"{letter.message_id}#{len(self._by_key)}"
        self._by_key[key] = letter

    @property
    def stale(self) -> bool:
        """The DLQ's depth disagrees with what the index holds (no pass running, and the index not full)."""
        full = len(self) >= self._scan_limit
        return not self.scan.running and self.depth is not None and self.depth != len(self) and not full

    @property
    def covers_all(self) -> bool:
        return self.depth is None or self.depth <= self._scan_limit

    def select(self, selection: Selection) -> list[DeadLetter]:
        now = dt.datetime.now(dt.UTC)
        return [letter for letter in self._letters if selection.matches(letter, now)]

    def get(self, message_id: str) -> DeadLetter | None:
        return self._by_key.get(message_id)

    def groups(self, selection: Selection | None = None) -> list[Group]:
        """By error code x tenant, largest first: O(dead letters) in memory, nothing asked of the broker."""
        found: dict[tuple[str | None, str | None], Group] = {}
        letters = list(self._letters) if selection is None else self.select(selection)
        for letter in letters:
            key = (letter.error_code, letter.tenant_id)
            group = found.get(key)
            if group is None:
                found[key] = Group(key[0], key[1], 1, letter.last_death, letter.last_death)
                continue
            group.count += 1
            if letter.last_death is not None:
                if group.oldest is None or letter.last_death < group.oldest:
                    group.oldest = letter.last_death
                if group.newest is None or letter.last_death > group.newest:
                    group.newest = letter.last_death
        return sorted(found.values(), key=lambda g: (-g.count, g.error_code or "", g.tenant_id or ""))

    def error_codes(self) -> list[str]:
        return sorted({letter.error_code for letter in self._letters if letter.error_code})

    # --- keeping it up to date ----------------------------------------------------------------------

    def add(self, letter: DeadLetter) -> None:
        letter = _compact(letter)
        if self.scan.running:
            self._arrived.append(letter)
        else:
            self._put(letter)

    def remove(self, letter: DeadLetter) -> None:
        """One dead letter gone (replayed or purged): O(1), so a job removes each as it goes, and a repeat
        dead-lettered meanwhile (its event added it back) stays."""
        key = letter.message_id
        if key is not None and self._by_key.pop(key, None) is not None:
            return
        for other, known in self._by_key.items():  # a repeat's key, or a dead letter without a message id
            if (key is not None and known.message_id == key) or known == letter:
                del self._by_key[other]
                return

    async def rebuild(self) -> None:
        """One full pass over the DLQ (waits for its turn)."""
        async with self.turn:
            state = self.scan = ScanState(running=True, started=time.monotonic())
            try:
                fresh = [_compact(letter) async for letter in self._queue(state).each(Selection(), self._scan_limit)]
                known = {letter.message_id for letter in fresh}
                self._by_key = {}
                for letter in [*fresh, *(letter for letter in self._arrived if letter.message_id not in known)]:
                    self._put(letter)
                self.depth = await self._queue(None).depth()
            except Exception as exc:  # the broker went away: the next round tries again
                state.error = f"{type(exc).__name__}: {exc}"
                log.warning("console_index_pass_failed", error=state.error)
            finally:
                self._arrived = []
                state.running = False
                state.took_s = time.monotonic() - state.started
                state.finished_at = dt.datetime.now(dt.UTC)
                self._last_pass = time.monotonic()
            log.info("console_index_built", dead_letters=len(self), took_s=round(state.took_s, 3))

    def request_rebuild(self) -> None:
        """A pass as soon as no job runs (the operator's *Read the DLQ again*)."""
        self._forced = True
        self._wanted.set()

    def check_soon(self) -> None:
        """A depth check now (a job ended); a pass only if the depth disagrees."""
        self._wanted.set()

    async def keep_up(self, poll_s: float = 5.0) -> None:
        """Runs until cancelled: the first pass, then a depth check every ``poll_s`` (and when a job ends), and
        a pass when the operator asks or when the depth disagrees (at most every ``rescan_every_s``)."""
        await self.rebuild()
        while True:
            try:
                async with asyncio.timeout(poll_s):
                    await self._wanted.wait()
            except TimeoutError:
                pass
            self._wanted.clear()
            if self.turn.locked():
                continue  # a replay or purge is under way: its end says what changed
            try:
                self.depth = await self._queue(None).depth()
            except Exception as exc:
                log.warning("console_depth_check_failed", error=repr(exc))
                continue
            due = time.monotonic() - self._last_pass >= self._rescan_every_s
            if self._forced or (self.stale and due):
                self._forced = False
                await self.rebuild()
