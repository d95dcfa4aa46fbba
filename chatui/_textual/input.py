"""Terminal input: a lone Esc resolved after a short delay, by an input thread woken on time.

Textual's input thread hands every read to its parser, which holds a lone ESC
byte for `textual.constants.ESCAPE_DELAY` (100 ms unless `ESCDELAY` says
otherwise) in case more of an escape sequence follows. The thread looks again
only when its 100 ms `select` poll times out, so a lone Esc reaches the app
100 to 200 ms after the key. Here the delay is short (the config's
`escape_delay_ms`, 10 ms by default) and the thread sleeps exactly until the
parser's deadline, so a lone Esc reaches the app one delay after its byte
was read.

Why a short delay is safe: a terminal writes each key's escape sequence, a
mouse report or a paste marker in one `write()`, and a read of the pty returns
all of it. A sequence split across reads (over a slow link) still parses as
long as its bytes arrive less than the delay apart; the parser's deadline
starts again at each byte. tmux, which sits between many terminals and their
programs, has used 10 ms (`escape-time`) by default since 3.5.

Every key event's `time` is set to when its last byte was read from the
terminal, not when the parser let it out, so "stopped in N ms" counts from
the moment the user's key reached chatui.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from time import monotonic

from textual import constants, events
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.message import Message

IDLE_POLL = 0.1  # Seconds between looks at the exit flag while nothing is pending (Textual's).


def set_escape_delay(milliseconds: int) -> None:
    """Make Textual's parser wait `milliseconds` for the rest of a sequence after an ESC.

    The parser reads `textual.constants.ESCAPE_DELAY` each time it meets an
    ESC, so this applies to every parser in the process from its next ESC on.
    """
    # Textual declares it Final; it is read afresh at each ESC, which is what makes this work.
    constants.ESCAPE_DELAY = max(1, milliseconds) / 1000  # type: ignore[misc]


class InputPump:
    """Feeds terminal reads to Textual's parser and says how long to wait before looking again.

    `deliver` receives each parsed message, in order. The caller reads, calls
    `feed()`, waits at most `timeout()` for more input, and calls `tick()`
    when the wait ends without any: that is when a pending lone ESC becomes
    the Esc key.
    """

    def __init__(
        self,
        deliver: Callable[[Message], None],
        *,
        parser: XTermParser | None = None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self._deliver = deliver
        self._parser = parser or XTermParser()
        self._clock = clock
        self._last_read_at = clock()

    def feed(self, text: str, read_at: float) -> None:
        """Parse `text`, read from the terminal at `read_at` (the clock's time)."""
        self._last_read_at = read_at
        self._send(self._parser.feed(text))

    def tick(self) -> None:
        """Let out what the parser holds whose wait has ended (a lone ESC: the Esc key)."""
        self._send(self._parser.tick())

    def timeout(self) -> float:
        """Seconds until the parser's pending deadline, at most `IDLE_POLL`."""
        deadline = self._parser._timeout_time
        if deadline is None:
            return IDLE_POLL
        return min(IDLE_POLL, max(0.0, deadline - self._clock()))

    def finish(self) -> None:
        """End of input: let out whatever is left."""
        with contextlib.suppress(EOFError, ParseError):
            self._send(self._parser.feed(""))

    def _send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, events.Key | events.Paste):
                message.time = self._last_read_at  # Its last byte arrived with the last read.
            self._deliver(message)
