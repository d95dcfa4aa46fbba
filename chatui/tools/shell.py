"""Run a shell command in a process group of its own, with a timeout and bounded output.

The command runs under `/bin/sh -c` in the workspace, in a new session (so a
new process group, which its children and grandchildren join), with no
standard input, and without the API keys in its environment. Standard output
and error are captured together; at most `limit` bytes are kept, the start
and the end, with a note saying how much was cut. However the run ends
(done, timed out, cancelled by a stop), the whole group is killed before
`run_shell` returns or raises: nothing it started outlives it. (A process
that leaves the group on purpose, with `setsid`, is beyond any group kill.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatui import redact
from chatui.cancel import current_token
from chatui.config import SECRET_ENV
from chatui.tools.registry import ToolFailed

DRAIN_WAIT = 2.0  # Seconds to wait for the last output once the group is killed.


@dataclass
class ShellResult:
    exit_code: int | None  # None: killed at the timeout.
    output: str
    cut: int = 0  # Bytes left out of the middle.


async def run_shell(command: str, *, cwd: Path, timeout: float, limit: int) -> ShellResult:
    """Run `command`; see the module docstring. Raises ToolFailed if it cannot start."""
    starting = asyncio.ensure_future(
        asyncio.get_running_loop().subprocess_exec(
            lambda: _Capture(limit),
            "/bin/sh",
            "-c",
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in SECRET_ENV},
        )
    )
    try:
        transport, capture = await asyncio.shield(starting)
    except OSError as error:
        raise ToolFailed(f"The command could not start: {error.strerror or error}") from None
    except asyncio.CancelledError:
        # Stopped while it starts: asyncio would kill the shell alone, and what it has
        # forked by then would live on. Its whole group goes as soon as it has started.
        starting.add_done_callback(_kill_once_started)
        raise
    pid = transport.get_pid()
    # The stop itself kills the group, before the loop gets back to this task.
    token = current_token.get()
    unlink = token.on_cancel(lambda: kill_group(pid)) if token is not None else _nothing
    try:
        try:
            async with asyncio.timeout(timeout):
                await capture.exited.wait()
        except TimeoutError:
            kill_group(pid)
            await capture.drained()
            return ShellResult(None, capture.output.text(), capture.output.cut)
        kill_group(pid)  # What it left in the background would hold the pipe open.
        await capture.drained()
        return ShellResult(transport.get_returncode(), capture.output.text(), capture.output.cut)
    finally:
        unlink()
        kill_group(pid)  # However it ended; after a stop, a second kill finds nothing.
        capture.close_on_exit(transport)


def _nothing() -> None:
    """Nothing to undo."""


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group `pgid` (none left is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_once_started(starting: asyncio.Future[tuple[asyncio.SubprocessTransport, Any]]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        transport, capture = starting.result()
        kill_group(transport.get_pid())
        capture.close_on_exit(transport)


class _Capture(asyncio.SubprocessProtocol):
    """The command's output (standard output and error together) and its exit."""

    def __init__(self, limit: int) -> None:
        self.output = _Output(limit)
        self.exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._transport: asyncio.SubprocessTransport | None = None

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output.add(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._closed.set()

    def process_exited(self) -> None:
        self.exited.set()
        if self._transport is not None:
            self._transport.close()

    def close_on_exit(self, transport: asyncio.SubprocessTransport) -> None:
        """Close `transport` once the killed shell has exited (and been reaped).

        Closed before, it would poll the shell itself and could reap it under
        asyncio's child watcher, which then logs an "unknown child process".
        """
        if self.exited.is_set():
            transport.close()
        else:
            self._transport = transport

    async def drained(self) -> None:
        """Wait (briefly) for the output's end: every writer is dead or gone."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_WAIT):
                await self._closed.wait()


class _Output:
    """The start and the end of a stream of output, about `limit` characters shown in all.

    Each end keeps room for a whole API key past its cut (the running turn's
    longest, in UTF-8), so the text is redacted before it is cut, never after.
    """

    def __init__(self, limit: int) -> None:
        self.half = max(limit, 2) // 2
        self._keep = self.half + 4 * redact.margin()
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._keep - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        if len(self._tail) > 2 * self._keep:  # Trimmed now and then, not per chunk.
            del self._tail[: -self._keep]

    @property
    def cut(self) -> int:
        return max(0, self._total - 2 * self.half)

    def text(self) -> str:
        kept = self._head + self._tail
        if not self.cut:
            return redact.redact(kept.decode(errors="replace"))
        if len(kept) == self._total:  # All of it is here: each end from the whole.
            head, tail = kept[: self._keep], kept[-self._keep :]
        else:
            head, tail = self._head, self._tail[-self._keep :]
        shown_head, shown_tail = redact.clip_head_tail(
            head.decode(errors="replace"), tail.decode(errors="replace"), self.half
        )
        return f"{shown_head}\n[… {self.cut:,} bytes of output cut …]\n{shown_tail}"
