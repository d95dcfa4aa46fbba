"""Keys typed while chatui starts: kept as typed, until the app reads them.

Until Textual takes the terminal (a few hundred milliseconds in, after its
import), the terminal is in its "cooked" mode: it echoes each key where the
shell's prompt was, holds the line until Enter, and turns that Enter (CR)
into a line feed, which the app then reads as Ctrl+J, a new line in the
prompt: "hello" and Enter typed at once was left unsent. `keys_typed_ahead()`
takes the terminal out of that mode as soon as chatui knows it will run its
app: no echo, no line editing, CR left as CR (Ctrl+C still interrupts). What
the terminal had already turned into line feeds is counted (`take_pending`)
so that the app's input reads those as the Enters they were.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

_original: list[Any] | None = None  # The terminal's own settings, while changed here.
_pending = 0  # Bytes typed before the change, not yet read by the app.


@contextlib.contextmanager
def keys_typed_ahead() -> Iterator[None]:
    """Until the block ends, keys typed reach the app as typed; then the terminal is as it was.

    Does nothing without a terminal on stdin (or without termios).
    """
    global _original, _pending
    try:
        import fcntl
        import termios
    except ImportError:  # Not a POSIX system.
        yield
        return
    try:
        fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else -1
        original = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):  # No terminal on stdin.
        yield
        return
    changed = list(original)
    changed[0] &= ~termios.ICRNL  # iflag: Enter stays CR.
    changed[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: no line editing, no echo.
    changed[6] = list(original[6])
    changed[6][termios.VMIN], changed[6][termios.VTIME] = 1, 0
    try:
        termios.tcsetattr(fd, termios.TCSANOW, changed)
        # What was typed before, now readable whole: its line feeds were Enters.
        waiting = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, waiting)
        _original, _pending = original, int.from_bytes(waiting, sys.byteorder)
    except (OSError, termios.error):
        yield
        return
    try:
        yield
    finally:
        _original, _pending = None, 0
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, original)


def original_settings() -> list[Any] | None:
    """The terminal's own settings while `keys_typed_ahead` has changed them, else None."""
    return _original


def take_pending() -> int:
    """How many bytes were typed before chatui took the terminal (once; then 0)."""
    global _pending
    pending, _pending = _pending, 0
    return pending


def as_typed(data: bytes, pending: int) -> bytes:
    """`data`, read from the terminal, with the line feeds of its first `pending` bytes made
    the Enters (CR) they were typed as."""
    return data[:pending].replace(b"\n", b"\r") + data[pending:]
