"""Run a shell command in a process group of its own, with a timeout and bounded output.

The command runs under `/bin/sh -c` in the workspace, in a process group of
its own (which its children and grandchildren join), with no standard input,
and without the API keys in its environment. Standard output and error are
captured together; at most `limit` bytes are kept, the start and the end,
with a note saying how much was cut. However the run ends (done, timed out,
cancelled by a stop), the whole group is killed: a stop kills it at once,
from the cancel token's hook, before the task runs again.

A process that leaves the group (`setsid`, `setpgid`, a daemon's double fork)
is beyond a group kill. On Linux the shell therefore runs under a supervisor
of its own, `reaper.py`, a small separate Python process and a child
subreaper: whatever the command starts stays its descendant, orphans
included, and when the shell ends (or chatui asks it to finish, with SIGTERM,
on a timeout, or on a stop once the stop's first frame is drawn) it kills
them all and reports those that were outside the group, which the result
names (`ShellResult.note`), with any that could not be killed; `run_shell`
returns or raises once it has (after a stop, waiting at most `STOP_WAIT`).
chatui reads that report from a pipe; no process
is looked for on the event loop (a scan of all of /proc takes tens of
milliseconds on a busy machine). The supervisor is never in the group a stop
kills. If it is killed itself (SIGKILL from outside, or by the command: it
runs as the same user), its orphans go to init and live on; the result then
says that what left the group was not tracked. Elsewhere there is no child
subreaper: only the group is killed, and the result says that what left it
cannot be tracked there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatui import redact
from chatui.cancel import current_token
from chatui.config import SECRET_ENV
from chatui.tools.registry import ToolFailed

DRAIN_WAIT = 2.0  # Seconds to wait for the last output once the group is killed.
REPORT_WAIT = 5.0  # Seconds for the supervisor's report once it is asked to finish.
STOP_WAIT = 1.0  # Seconds a stopped call waits for the supervisor to finish.
SUPERVISOR = Path(__file__).with_name("reaper.py").read_text(encoding="utf-8")
SUPERVISED = sys.platform.startswith("linux")  # A child subreaper is Linux's.


@dataclass
class ShellResult:
    exit_code: int | None  # None: killed at the timeout, or not known (see `lost`).
    output: str
    cut: int = 0  # Bytes left out of the middle.
    stopped: list[tuple[int, str]] = field(default_factory=list)  # (pid, name): left, killed.
    survivors: list[tuple[int, str]] = field(default_factory=list)  # Left, and still running.
    timed_out: bool = False
    tracked: bool = True  # False: what left the group cannot be followed on this system.
    lost: bool = False  # The supervisor was killed: what left the group was not stopped.

    @property
    def note(self) -> str:
        """What the command left running outside its process group, in a line or two ("")."""
        still = "could not be stopped and still run"
        lines = [
            _left_running(self.stopped, "was stopped", "were stopped"),
            _left_running(self.survivors, f"{still}s", still),
        ]
        if self.lost:
            lines.append(
                "[the command's supervisor was killed, so processes the command left running "
                "outside its process group were not stopped and may still run]"
            )
        elif not self.tracked:
            lines.append(
                "[processes the command starts outside its process group cannot be tracked "
                "on this system, so any it left running may still run]"
            )
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
    if SUPERVISED:
        program: tuple[str, ...] = (sys.executable, "-I", "-S", "-c", SUPERVISOR, command)
    else:
        program = ("/bin/sh", "-c", command)
    starting = asyncio.ensure_future(
        asyncio.get_running_loop().subprocess_exec(
            lambda: _Command(limit, supervised=SUPERVISED),
            *program,
            cwd=cwd,
            # The supervisor's input: a pipe that ends when chatui does, whatever kills it.
            stdin=subprocess.PIPE if SUPERVISED else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if SUPERVISED else subprocess.STDOUT,  # Its report.
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k not in SECRET_ENV},
        )
    )
    try:
        transport, running = await asyncio.shield(starting)
    except OSError as error:
        raise ToolFailed(f"The command could not start: {error.strerror or error}") from None
    except asyncio.CancelledError:
        # Stopped while it starts: asyncio would kill the process alone, and what it has
        # started by then would live on. It is stopped as a whole once it has started.
        starting.add_done_callback(_stop_once_started)
        raise
    # The stop itself kills the group, before the loop gets back to this task.
    token = current_token.get()
    unlink = token.on_cancel(running.stop) if token is not None else _nothing
    try:
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                await running.ended.wait()
        except TimeoutError:
            timed_out = True
        # Timed out: the group dies now, the supervisor kills the rest and reports.
        # Unsupervised, what the command left in its group would hold the pipe open.
        running.stop()
        await running.report()
        if running.failure is not None:
            raise ToolFailed(f"The command could not start: {running.failure}")
        await running.drained()
        return running.result(transport, timed_out)
    finally:
        unlink()
        running.stop()  # However it ended; after a stop, a second kill finds nothing.
        # Stopped, the supervisor finishes in a few ms: nothing the command started
        # outlives the call (unless that wait runs out), and it is not killed as asyncio
        # would kill it (a transport closed while its process runs), before it is done.
        await running.gone()
        running.close_on_exit(transport)


def _nothing() -> None:
    """Nothing to undo."""


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group `pgid` (none left is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop_once_started(
    starting: asyncio.Future[tuple[asyncio.SubprocessTransport, Any]],
) -> None:
    if not starting.cancelled() and starting.exception() is None:
        transport, running = starting.result()
        running.stop()
        running.close_on_exit(transport)


class _Command(asyncio.SubprocessProtocol):
    """A running command: its output, its supervisor's report, its exit, how to stop it."""

    def __init__(self, limit: int, *, supervised: bool) -> None:
        self.output = _Output(limit)
        self.supervised = supervised
        self._loop = asyncio.get_running_loop()
        self.ended = asyncio.Event()  # The report is whole (supervised), or the shell exited.
        self.exited = asyncio.Event()  # The process chatui started exited, and was reaped.
        self._closed = asyncio.Event()  # The output ended.
        self.group: int | None = None  # The command's process group (the shell's pid).
        self.exit_code: int | None = None
        self.failure: str | None = None  # Why the shell could not start.
        self.tracked = supervised
        self.stopped: list[tuple[int, str]] = []
        self.survivors: list[tuple[int, str]] = []
        self._report = bytearray()
        self._finished = False  # The supervisor has exited: nothing of the command to kill.
        self._asked = False  # chatui stopped it.
        self._pidfd: int | None = None  # The supervisor, for signals that cannot miss.
        self._transport: asyncio.SubprocessTransport | None = None
        self._close_on_exit = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport
        if not self.supervised:
            self.group = transport.get_pid()  # The shell leads its own session.
            return
        with contextlib.suppress(OSError, AttributeError):  # Gone, or no pidfds here.
            self._pidfd = os.pidfd_open(transport.get_pid())

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.output.add(data)
            return
        self._report += data
        *lines, rest = self._report.split(b"\n")
        self._report = bytearray(rest)
        for line in lines:
            with contextlib.suppress(ValueError):  # Not the report (a crash's traceback).
                self._take(line.decode(errors="replace").split(" "))

    def _take(self, words: list[str]) -> None:
        """One line of the supervisor's report (see reaper.py)."""
        match words:
            case ["shell", pid] if self.group is None:
                self.group = int(pid)
            case ["untracked"]:
                self.tracked = False
            case ["left", pid, killed, name]:
                process = (int(pid), bytes.fromhex(name).decode(errors="replace"))
                (self.stopped if killed == "1" else self.survivors).append(process)
            case ["failed", text]:
                self.failure = bytes.fromhex(text).decode(errors="replace") or "no reason given"
            case ["exit", code]:
                self.exit_code = int(code)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._closed.set()
        elif fd == 2:  # The supervisor has exited: its report is whole.
            self._finished = True
            self.ended.set()

    def process_exited(self) -> None:
        self.exited.set()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not self.supervised:
            self.ended.set()
        if self._close_on_exit and self._transport is not None:
            self._transport.close()

    @property
    def lost(self) -> bool:
        """Whether the supervisor ended (killed) before it could say the command ended."""
        return (
            self.supervised
            and self.ended.is_set()
            and self.group is not None
            and (self.exit_code is None and self.failure is None)
        )

    def stop(self) -> None:
        """Kill the command's group now, and have the supervisor kill the rest and report.

        Called by a stop's token hook too: nothing here waits. The group's id
        is only killed until the supervisor has ended, having killed all (it
        reaps the shell last): after that, it may be some other program's.
        """
        if self._finished:
            if self.lost and self.group is not None:
                kill_group(self.group)  # The shell may run on, its supervisor gone.
            return
        if self.group is not None:
            kill_group(self.group)
        if not self.supervised or self._asked:
            return
        self._asked = True
        # Its sweep takes a core for a few ms: after what the stop draws at once.
        try:
            self._loop.call_soon_threadsafe(self._finish)
        except RuntimeError:  # The loop is closed.
            self._finish()

    def _finish(self) -> None:
        """Ask the supervisor to kill what is left and report."""
        for number in (signal.SIGTERM, signal.SIGCONT):  # Stopped (SIGSTOP), it goes on.
            with contextlib.suppress(ProcessLookupError):
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, number)
                elif self._transport is not None and not self.exited.is_set():
                    os.kill(self._transport.get_pid(), number)

    async def gone(self) -> None:
        """Wait (briefly) until the process chatui started has exited and been reaped."""
        waiting = asyncio.ensure_future(self.exited.wait())
        await asyncio.wait([waiting], timeout=STOP_WAIT)  # Cancelled or not, it waits.
        waiting.cancel()

    async def report(self) -> None:
        """Wait (a while) for the supervisor's report once it was asked to finish."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPORT_WAIT):
                await self.ended.wait()

    def result(self, transport: asyncio.SubprocessTransport, timed_out: bool) -> ShellResult:
        exit_code = self.exit_code if self.supervised else transport.get_returncode()
        return ShellResult(
            None if timed_out else exit_code,
            self.output.text(),
            self.output.cut,
            stopped=self.stopped,
            survivors=self.survivors,
            timed_out=timed_out,
            tracked=self.tracked,
            lost=self.lost,
        )

    def close_on_exit(self, transport: asyncio.SubprocessTransport) -> None:
        """Close `transport` once its process has exited (and been reaped).

        Closed before, asyncio would kill it (the supervisor, then, before it
        killed the rest), or poll it and reap it under asyncio's child watcher,
        which then logs an "unknown child process".
        """
        if self.exited.is_set():
            transport.close()
        else:
            self._close_on_exit = True

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
