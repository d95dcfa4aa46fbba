"""The processes a test starts: found from /proc by a marker, or run on a pseudo-terminal.

A shell tool's test runs `sleep <marker>`, where the marker is a duration of
about 30 s that no other process uses; `living(marker)` lists those still
alive (a zombie is dead: it only waits for its parent to read its status).

`OnPty` runs a program (chatui, say) on a pseudo-terminal of its own, as a
user's terminal would, and keeps reading what it draws so that it never
blocks on a full terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import select
import signal
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    pgid: int
    state: str
    cmdline: bytes

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def marker() -> str:
    """A `sleep` duration of about 30 s that no other process here uses, e.g. "30.48213"."""
    return f"30.{random.randint(10000, 99999)}"


def processes() -> Iterator[Process]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # It ended meanwhile.
        fields = stat[stat.rindex(")") + 2 :].split()
        yield Process(int(entry.name), int(fields[2]), fields[0], cmdline)


def alive(pid: int) -> bool:
    """Whether process `pid` lives (not gone, not a zombie): one /proc read, cheap to poll."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def living(marker: str) -> list[Process]:
    """The living processes whose command line is `sleep <marker>`."""
    wanted = f"sleep\0{marker}\0".encode()
    return [p for p in processes() if p.cmdline == wanted and p.alive]


def group_alive(pgid: int) -> bool:
    """Whether any living process is in the group `pgid`."""
    return any(p.pgid == pgid and p.alive for p in processes())


async def until_running(marker: str, count: int, timeout: float = 10.0) -> list[Process]:
    """Wait until `count` sleepers with `marker` are alive; returns them."""
    async with asyncio.timeout(timeout):
        while len(found := living(marker)) < count:
            await asyncio.sleep(0.005)
    return found


def one_command_schema(command: str) -> dict:
    """A shell tool's schema that allows `command` alone (a grammar then writes it)."""
    return {
        "type": "object",
        "properties": {"command": {"enum": [command]}},
        "required": ["command"],
        "additionalProperties": False,
    }


def nested_sleepers(marker: str) -> str:
    """A command with a child and a grandchild, both `sleep <marker>` (30 s or more)."""
    return f"sh -c 'sleep {marker} & wait' & sleep {marker}; wait"


class OnPty:
    """A program on a pseudo-terminal of its own (a session leader), its output kept."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], size: tuple[int, int] = (100, 30)):
        columns, lines = size
        pid, fd = os.forkpty()
        if pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
                os.execvpe(argv[0], list(argv), env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.status: int | None = None
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                data = os.read(self.fd, 1 << 16) if ready else None
            except (OSError, ValueError):
                return  # EIO: the program closed its terminal; or the fd was closed.
            if data == b"":
                return
            if data:
                with self._lock:
                    self._output += data

    @property
    def output(self) -> str:
        with self._lock:
            return self._output.decode(errors="replace")

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Poll `condition` until it holds; AssertionError after `timeout` s or if it exited."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.exit_code(0) is None, f"it exited: {self.output[-2000:]!r}"
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.01)

    def exit_code(self, timeout: float) -> int | None:
        """Its exit code once it has exited (waiting up to `timeout` s), else None."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= deadline:
                return None
            else:
                time.sleep(0.01)
        return self.status

    def close(self) -> None:
        """Kill what is left of it (its whole session's group) and free the terminal."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self._reader.join(1)
