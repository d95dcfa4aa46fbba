"""A program under a pseudo-terminal, its output parsed by pyte: what a user would see.

`PtyChild` forks the program onto a new pty of a given size (TIOCSWINSZ is
set on the child's side before it execs). A reader thread waits on the pty's
master with select and stamps each chunk with `time.perf_counter()` the
moment `os.read` returns it; the caller feeds the chunks to a `pyte` screen in
order (`wait_for`), checking the screen after each, so the time of a change
is the time of the chunk that made it visible. The thread does only the
reading and the stamping. Around the moment being timed, the caller only
gathers the chunks (`collect`) and parses them afterwards (`replay`): pyte
would otherwise take a core from the app it measures.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import re
import select
import signal
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pyte

T = TypeVar("T")

# The state word of a status line: chatui's StatusBar (" provider · model │ state …")
# and the floor app's (" floor │ state"). A reply's text is drawn inside a box
# (" │ text … │"), which this does not match.
STATUS_LINE = re.compile(r"^ (?!│)(\S+)(?: · [^│]*)? │ ([a-z]+)\b")
TOKENS = re.compile(r" │ ~?(\d+) tok\b")  # chatui's token count of the reply.
STATES = (
    "idle", "loading", "waiting", "streaming", "awaiting", "running", "stopping", "stopped",
    "failed",
)  # fmt: skip


class ChildExited(Exception):
    """The program closed its terminal (exited or crashed)."""


class PtyChild:
    """A program on a pseudo-terminal of `size` (columns, lines), and its emulated screen."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        size: tuple[int, int],
        env: dict[str, str],
        cwd: str,
        transcript: str | None = None,
    ) -> None:
        columns, lines = size
        self.size = size
        pid, fd = os.forkpty()
        if pid == 0:  # The child: a session leader whose controlling terminal is the pty.
            try:
                winsize = struct.pack("HHHH", lines, columns, 0, 0)
                fcntl.ioctl(0, termios.TIOCSWINSZ, winsize)
                os.chdir(cwd)
                os.execvpe(argv[0], list(argv), env)
            except BaseException as error:
                os.write(2, f"exec failed: {error!r}\n".encode())
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        self.exited = False
        self.bytes_read = 0
        self.last_stamp = 0.0  # The read time of the last chunk parsed.
        self._closing = threading.Event()
        self._transcript = open(transcript, "wb") if transcript else None  # noqa: SIM115
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    # The reader thread

    def _read(self) -> None:
        fd = self.fd
        while not self._closing.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
            except (OSError, ValueError):
                break
            if not ready:
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:  # EIO: the child's side is closed.
                data = b""
            self.chunks.put((time.perf_counter(), data))
            if not data:
                break

    # Driving it

    def write(self, data: bytes) -> float:
        """Write `data` to the program's terminal input; the time just before the write."""
        sent = time.perf_counter()
        os.write(self.fd, data)
        return sent

    def feed_one(self, timeout: float) -> float | None:
        """Parse the next chunk of output (waiting up to `timeout` s); its read time, or None."""
        if self.exited:
            raise ChildExited
        try:
            stamp, data = self.chunks.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None
        self._parse(stamp, data)
        return stamp

    def _parse(self, stamp: float, data: bytes) -> None:
        """Feed one chunk to the screen (b"": the program closed its terminal)."""
        if not data:
            self.exited = True
            raise ChildExited
        self.bytes_read += len(data)
        if self._transcript is not None:
            self._transcript.write(data)
        self.stream.feed(data)
        self.last_stamp = stamp

    def wait_for(self, check: Callable[[PtyChild], T | None], timeout: float) -> tuple[float, T]:
        """Parse output until `check(self)` returns something other than None.

        Returns (read time of the chunk after which it did, what it returned);
        raises TimeoutError after `timeout` s. The screen is checked once first,
        in case the chunks parsed so far show it (the time is then the last one's).
        """
        found = check(self)
        if found is not None:
            return self.last_stamp, found
        deadline = time.perf_counter() + timeout
        while True:
            stamp = self.feed_one(deadline - time.perf_counter())
            if stamp is None:
                if time.perf_counter() >= deadline:
                    raise TimeoutError
                continue
            found = check(self)
            if found is not None:
                return stamp, found

    def collect(self, quiet: float, limit: float) -> list[tuple[float, bytes]]:
        """Gather output, unparsed, until none came for `quiet` s (at most `limit` s).

        While the app works on what was just sent, this process only reads:
        pyte, which takes a core while it parses, would compete with the app
        for the machine's cores (two here). `replay()` parses afterwards.
        """
        gathered: list[tuple[float, bytes]] = []
        deadline = time.perf_counter() + limit
        while (left := deadline - time.perf_counter()) > 0:
            try:
                gathered.append(self.chunks.get(timeout=min(quiet, left)))
            except queue.Empty:
                break
            if not gathered[-1][1]:
                break  # The program closed its terminal; replay() raises ChildExited.
        return gathered

    def replay(
        self, gathered: list[tuple[float, bytes]], checks: Sequence[Callable[[PtyChild], T | None]]
    ) -> list[tuple[float, T] | None]:
        """Parse `gathered` in order; for each check, (read time, result) of its first hit."""
        hits: list[tuple[float, T] | None] = [None] * len(checks)
        for stamp, data in gathered:
            self._parse(stamp, data)
            for index, check in enumerate(checks):
                if hits[index] is None and (found := check(self)) is not None:
                    hits[index] = (stamp, found)
        return hits

    def drain(self, seconds: float) -> None:
        """Keep parsing output for `seconds` (the program never blocks on a full pty)."""
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            self.feed_one(left)

    # What the screen shows

    def row(self, y: int) -> str:
        """Screen line `y` as text (a wide character's second cell is empty in pyte)."""
        line = self.screen.buffer[y]
        return "".join(line[x].data for x in range(self.screen.columns))

    def status_line(self) -> str:
        """The bottom-most status line on screen ("" if none), searched from the bottom up."""
        for y in range(self.screen.lines - 1, -1, -1):
            text = self.row(y)
            match = STATUS_LINE.match(text)
            if match and match.group(2) in STATES:
                return text.rstrip()
        return ""

    def status(self) -> str | None:
        """The state word of the bottom-most status line on screen, if there is one."""
        match = STATUS_LINE.match(self.status_line())
        return match.group(2) if match else None

    def streaming_text(self) -> bool:
        """Whether the status line says a reply streams and, if it counts tokens, some came.

        chatui shows "streaming" from the moment the request starts (before the
        model's first token, during the prompt's processing); the token count
        tells when text is arriving.
        """
        line = self.status_line()
        match = STATUS_LINE.match(line)
        if not match or match.group(2) != "streaming":
            return False
        tokens = TOKENS.search(line)
        return tokens is None or int(tokens.group(1)) > 0

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    # Ending it

    def close(self, quit_keys: bytes | None = b"\x11", grace: float = 5.0) -> int | None:
        """Ask the program to quit (`quit_keys`), then kill its process group. Its exit status."""
        status = None
        if quit_keys and not self.exited:
            with contextlib.suppress(OSError):
                os.write(self.fd, quit_keys)
            deadline = time.perf_counter() + grace
            while time.perf_counter() < deadline:
                with contextlib.suppress(ChildExited):
                    self.feed_one(0.05)
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                status = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # The child leads its own session and group.
        if status is None:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
        self._closing.set()
        self._reader.join(1)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self._transcript is not None:
            self._transcript.close()
        return os.waitstatus_to_exitcode(status) if status is not None else None


def child_env(root: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child: ours, `root` first on PYTHONPATH, a terminal type, `extra`."""
    env = dict(os.environ)
    env.pop("TEXTUAL", None)  # No devtools.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["TERM"] = "xterm-256color"  # The same terminal whatever runs the benchmark.
    env["COLORTERM"] = "truecolor"
    env.update(extra)
    return env


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
