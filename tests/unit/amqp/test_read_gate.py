"""The read gate: reading stops while paused, except while a channel operation waits for its reply; a new
connection starts reading; a pause is overdue after ``longest_s``."""

from __future__ import annotations

import asyncio

from yarl import URL

from worker.amqp.read_gate import ReadGate


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False


def attached(gate: ReadGate) -> FakeTransport:
    transport = FakeTransport()
    gate._transport = transport
    return transport


def test_reading_stops_while_paused_and_goes_on_when_resumed() -> None:
    gate = ReadGate()
    transport = attached(gate)
    gate.pause()
    assert gate.paused and not transport.reading and gate.pauses == 1
    gate.pause()  # again (reading may have been turned on meanwhile): still one pause
    assert gate.pauses == 1
    gate.resume()
    assert not gate.paused and transport.reading


def test_a_channel_operation_reads_its_reply_even_while_paused() -> None:
    gate = ReadGate()
    transport = attached(gate)
    gate.pause()
    with gate.answering():
        assert transport.reading
        with gate.answering():
            pass
        assert transport.reading  # the outer operation still waits
    assert not transport.reading  # paused again after it


def test_a_pause_is_overdue_after_its_longest(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("worker.amqp.read_gate.time.monotonic", lambda: now[0])
    gate = ReadGate(longest_s=15)
    attached(gate)
    assert not gate.overdue()
    gate.pause()
    now[0] += 14.9
    assert not gate.overdue()
    now[0] += 0.2
    assert gate.overdue()


async def test_a_new_connection_reads_its_handshake_even_if_the_last_one_was_paused(monkeypatch) -> None:
    gate = ReadGate()
    attached(gate)
    gate.pause()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _reader, writer = await gate.create(URL(f"amqp://127.0.0.1:{port}/"))
        assert not gate.paused and writer.transport.is_reading()  # type: ignore[attr-defined]
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
