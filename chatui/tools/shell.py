"""Run a shell command in a process group of its own, with a timeout and bounded output.

The command runs under `/bin/sh -c` in the workspace, in a new session (so a
new process group, which its children and grandchildren join), with no
standard input, and without the API keys in its environment. Standard output
and error are captured together; at most `limit` bytes are kept, the start
and the end, with a note saying how much was cut. However the run ends
(done, timed out, cancelled by a stop), the whole group is killed before
`run_shell` returns or raises: nothing it started outlives it.

A process that leaves the group (`setsid daemon &`, `setpgid`, a double
fork) is beyond a group kill: `process_tree.CommandProcesses` follows the
command's descendants while it runs and finds the rest at its end, and they
are killed too. The result names those, and any that could not be killed
(`ShellResult.note`), so that the model and the user know what was left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatui import redact
from chatui.cancel import current_token
from chatui.config import SECRET_ENV
from chatui.tools.process_tree import CommandProcesses, Process
from chatui.tools.registry import ToolFailed

DRAIN_WAIT = 2.0  # Seconds to wait for the last output once the group is killed.
FIRST_LOOK, LAST_LOOK = 0.01, 0.5  # Seconds between looks for the command's processes.


@dataclass
class ShellResult:
    exit_code: int | None  # None: killed at the timeout.
    output: str
    cut: int = 0  # Bytes left out of the middle.
    stopped: list[tuple[int, str]] = field(default_factory=list)  # (pid, name): left, killed.
    survivors: list[tuple[int, str]] = field(default_factory=list)  # Left, and still running.

    @property
    def note(self) -> str:
        """What the command left running outside its process group, in a line or two ("")."""
        still = "could not be stopped and still run"
        lines = [
            _left_running(self.stopped, "was stopped", "were stopped"),
            _left_running(self.survivors, f"{still}s", still),
        ]
        return "\n".join(line for line in lines if line)


def _left_running(processes: list[tuple[int, str]], one: str, more: str) -> str:
    if not processes:
        return ""
    count = "1 process" if len(processes) == 1 else f"{len(processes)} processes"
    names = ", ".join(f"{name} (pid {pid})" for pid, name in processes)
    what = one if len(processes) == 1 else more
    return f"[{count} the command left running outside its process group {what}: {names}]"


async def run_shell(command: str, *, cwd: Path, timeout: float, limit: int) -> ShellResult:
    """Run `command`; see the module docstring. Raises ToolFailed if it cannot start."""
    tree = CommandProcesses()
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
            env={k: v for k, v in os.environ.items() if k not in SECRET_ENV} | tree.environment,
        )
    )
    try:
        transport, capture = await asyncio.shield(starting)
    except OSError as error:
        raise ToolFailed(f"The command could not start: {error.strerror or error}") from None
    except asyncio.CancelledError:
        # Stopped while it starts: asyncio would kill the shell alone, and what it has
        # forked by then would live on. Its whole group goes as soon as it has started.
        starting.add_done_callback(lambda started: _kill_once_started(started, tree))
        raise
    pid = transport.get_pid()
    tree.started(pid, _output_fd(transport))
    # The stop itself kills the group, before the loop gets back to this task.
    token = current_token.get()
    unlink = token.on_cancel(lambda: kill_group(pid)) if token is not None else _nothing
    following = asyncio.ensure_future(_follow(tree, capture.exited))
    swept = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await capture.exited.wait()
        except TimeoutError:
            exit_code = None
        else:
            exit_code = transport.get_returncode()
        kill_group(pid)  # What it left in the background would hold the pipe open.
        left, swept = tree.sweep(), True  # And what left its group.
        await capture.drained()
        survivors = await tree.survivors(left)
        return ShellResult(
            exit_code,
            capture.output.text(),
            capture.output.cut,
            stopped=[_named(p) for p in left if p not in survivors],
            survivors=[_named(p) for p in survivors],
        )
    finally:
        following.cancel()
        unlink()
        kill_group(pid)  # However it ended; after a stop, a second kill finds nothing.
        if not swept:
            tree.sweep()  # Stopped: what left the group goes too, unreported.
        capture.close_on_exit(transport)


async def _follow(tree: CommandProcesses, exited: asyncio.Event) -> None:
    """Look for the command's processes now and then until it exits (ever less often)."""
    interval = FIRST_LOOK
    while not exited.is_set():
        tree.look()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await exited.wait()
        interval = min(interval * 2, LAST_LOOK)


def _output_fd(transport: asyncio.SubprocessTransport) -> int | None:
    """The file descriptor of the command's output pipe (its read end, ours), if known."""
    pipe = transport.get_pipe_transport(1)
    file = pipe.get_extra_info("pipe") if pipe is not None else None
    try:
        return file.fileno() if file is not None else None
    except ValueError:  # Closed already: the output ended, nothing holds the pipe.
        return None


def _named(process: Process) -> tuple[int, str]:
    return process.pid, process.name


def _nothing() -> None:
    """Nothing to undo."""


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group `pgid` (none left is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_once_started(
    starting: asyncio.Future[tuple[asyncio.SubprocessTransport, Any]], tree: CommandProcesses
) -> None:
    if not starting.cancelled() and starting.exception() is None:
        transport, capture = starting.result()
        tree.started(transport.get_pid(), None)
        kill_group(transport.get_pid())
        tree.sweep()
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
    """The start and the end of a stream of output, at most `limit` bytes shown in all.

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
        # Redacted first, then cut to `half` bytes each (a character cut in two is dropped).
        shown_head = redact.redact(head.decode(errors="replace")).encode()[: self.half]
        shown_tail = redact.redact(tail.decode(errors="replace")).encode()[-self.half :]
        return (
            f"{shown_head.decode(errors='ignore')}\n[… {self.cut:,} bytes of output cut …]\n"
            f"{shown_tail.decode(errors='ignore')}"
        )
