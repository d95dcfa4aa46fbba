"""The terminal input path: Textual's parser fed through `InputPump`, on a controlled clock.

Split sequences are fed read by read, with the clock moved between reads, and
never with sleeps. The parser keeps its deadline with `textual._parser.get_time`,
which these tests replace with the same fake clock: a canary of Textual's
internals, which fails if the parser stops keeping time that way.
"""

from __future__ import annotations

import asyncio
import os
import pty
import threading
import tty

import pytest
import textual._parser
from textual import events

from chatui._textual import input as terminal_input
from chatui._textual.input import InputPump, set_escape_delay
from chatui._textual.terminal_driver import TerminalDriver

DELAY = 0.010


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(textual._parser, "get_time", fake)
    monkeypatch.setattr(textual.constants, "ESCAPE_DELAY", DELAY)
    return fake


@pytest.fixture
def received() -> list[object]:
    return []


@pytest.fixture
def pump(clock: FakeClock, received: list[object]) -> InputPump:
    return InputPump(received.append, clock=clock)


def feed_reads(pump: InputPump, clock: FakeClock, *reads: tuple[float, str]) -> None:
    """Feed each (seconds after the previous read, text) as one read, ticking as a thread would."""
    for gap, text in reads:
        clock.now += gap
        pump.tick()  # The thread woke for this read; a deadline that passed is let out first.
        pump.feed(text, clock.now)


def keys(received: list[object]) -> list[str]:
    return [event.key for event in received if isinstance(event, events.Key)]


def test_a_lone_esc_is_the_escape_key_once_the_delay_has_passed(pump, clock, received):
    pump.feed("\x1b", clock.now)
    read_at = clock.now
    assert pump.timeout() == pytest.approx(DELAY)
    clock.now += DELAY / 2
    pump.tick()
    assert received == []  # Still waiting: more of a sequence may follow.
    assert pump.timeout() == pytest.approx(DELAY / 2)  # The thread wakes at the deadline.
    clock.now += DELAY / 2
    pump.tick()
    assert keys(received) == ["escape"]
    assert received[0].time == read_at  # Counted from the read, not from the parse.
    assert pump.timeout() == terminal_input.IDLE_POLL


def test_a_kitty_escape_needs_no_delay(pump, clock, received):
    pump.feed("\x1b[27u", clock.now)
    assert keys(received) == ["escape"]
    assert pump.timeout() == terminal_input.IDLE_POLL


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([(0, "\x1b"), (0.009, "[A")], ["up"]),
        ([(0, "\x1b["), (0.009, "A")], ["up"]),
        ([(0, "\x1b[1"), (0.005, "5"), (0.009, "~")], ["f5"]),
        ([(0, "\x1b"), (0.009, "[27u")], ["escape"]),
        ([(0, "\x1b[27;"), (0.009, "5u")], ["ctrl+escape"]),
        ([(0, "\x1bx")], ["alt+x"]),
        ([(0, "\x1b"), (0.009, "x")], ["alt+x"]),
        ([(0, "\x1b[1;"), (0.009, "3D")], ["alt+left"]),
        ([(0, "a\r\x1b"), (0.009, "[B")], ["a", "enter", "down"]),
    ],
)
def test_a_sequence_split_across_reads_within_the_delay_still_parses(
    pump, clock, received, reads, expected
):
    feed_reads(pump, clock, *reads)
    clock.now += DELAY * 2
    pump.tick()
    assert keys(received) == expected


def test_a_mouse_report_split_across_reads_is_one_mouse_event(pump, clock, received):
    feed_reads(pump, clock, (0, "\x1b[<0;1"), (0.009, "0;5"), (0.009, "M"))
    clock.now += DELAY * 2
    pump.tick()
    assert [type(event) for event in received] == [events.MouseDown]
    assert (received[0].x, received[0].y) == (9, 4)


def test_a_bracketed_paste_split_across_reads_is_one_paste(pump, clock, received):
    feed_reads(pump, clock, (0, "\x1b[20"), (0.009, "0~one\x1b"), (0.009, "[201~"))
    clock.now += DELAY * 2
    pump.tick()
    assert [type(event) for event in received] == [events.Paste]
    assert received[0].text == "one"


def test_a_gap_longer_than_the_delay_splits_the_esc_from_what_follows(pump, clock, received):
    feed_reads(pump, clock, (0, "\x1b"), (DELAY * 1.5, "x"))
    assert keys(received) == ["escape", "x"]


def test_keys_of_one_read_share_its_time(pump, clock, received):
    """Enter and Esc in one read: the Esc does not count as earlier than the Enter."""
    pump.feed("\r\x1b", clock.now)
    read_at = clock.now
    clock.now += DELAY
    pump.tick()
    assert keys(received) == ["enter", "escape"]
    assert [event.time for event in received] == [read_at, read_at]


def test_set_escape_delay_sets_the_parsers_delay(monkeypatch, clock, received, pump):
    monkeypatch.setattr(textual.constants, "ESCAPE_DELAY", 0.1)
    set_escape_delay(25)
    pump.feed("\x1b", clock.now)
    assert pump.timeout() == pytest.approx(0.025)
    set_escape_delay(0)  # Never 0: a split sequence would become typed text.
    assert pytest.approx(0.001) == textual.constants.ESCAPE_DELAY


async def test_the_input_thread_wakes_at_the_deadline_not_on_its_poll(monkeypatch):
    """A real pty and the real thread, with the idle poll made a minute long.

    If the thread only looked again when its poll ran out, the Esc would take
    a minute; it comes one escape delay after its byte.
    """
    monkeypatch.setattr(terminal_input, "IDLE_POLL", 60.0)  # What the pump answers.
    monkeypatch.setattr(textual.constants, "ESCAPE_DELAY", DELAY)
    master, slave = pty.openpty()
    tty.setraw(slave)  # As Textual sets the terminal: bytes arrive as typed.
    got: list[events.Key] = []
    arrived = threading.Event()

    driver = TerminalDriver.__new__(TerminalDriver)
    driver.fileno = slave
    driver.exit_event = threading.Event()
    driver._debug = False

    def process_message(message: object) -> None:
        if isinstance(message, events.Key):
            got.append(message)
            arrived.set()

    driver.process_message = process_message  # type: ignore[method-assign]
    thread = threading.Thread(target=driver.run_input_thread, daemon=True)
    try:
        thread.start()
        os.write(master, b"\x1b")
        assert await asyncio.to_thread(arrived.wait, 10.0)
        assert [key.key for key in got] == ["escape"]
    finally:
        driver.exit_event.set()
        os.write(master, b"x")  # Wakes the thread's long select so it sees the flag.
        thread.join(5)
        os.close(master)
        os.close(slave)
    assert not thread.is_alive()
