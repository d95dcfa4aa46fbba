"""The processes one shell command started, found from /proc, even those that left its group.

Killing a command's process group kills what stays in it; a process that
calls `setsid` or `setpgid` (`setsid daemon &`, a double fork) leaves the
group, and would run on after the command, unseen. `CommandProcesses` finds
them three ways, none of which needs privileges (a cgroup or a PID namespace
would, on most systems):

- descent: the shell's children, theirs, and so on, by the parent links in
  `/proc/<pid>/stat`, looked at while the command runs (`look()`, polled)
  and at its end, and remembered even after a parent dies and its orphans
  move to init;
- at the end, a mark in the environment: the command runs with
  `CHATUI_COMMAND=<token>`, which its descendants inherit (unless they clear
  their environment), so an orphan made between two looks is still found;
- at the end, the command's output pipe: a process holding it is the command's.

Making chatui a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`) would
bring such orphans to chatui rather than to init, but for the whole process
and for good: every orphan of anything it runs would become its child to
reap, and one with neither mark nor pipe could not be told from chatui's
other children. The mark and the pipe find the same orphans without that.

A remembered process is named by its pid and its start time, so a pid reused
by some other program is never killed. `sweep()` kills (SIGKILL) all that
is found and says which of those were outside the command's group;
`survivors()` says which of them still live a moment later (another user's
process, which the kill cannot reach).

Not found: a process that clears its environment, closes the pipe, and
leaves its parent between two looks; or one that asks another program (a
service manager, `at`) to start it. On systems without /proc, nothing is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MARK_VARIABLE = "CHATUI_COMMAND"
KILL_WAIT = 1.0  # Seconds for the killed processes to die before they are called survivors.


@dataclass(frozen=True)
class Process:
    """One process, as /proc shows it; `pid` and `started` name it for sure."""

    pid: int
    started: int  # Clock ticks after boot: with the pid, it names one process only.
    parent: int
    group: int
    name: str
    state: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")  # A zombie is dead; its parent reaps it.


def read_process(pid: int) -> Process | None:
    """Process `pid` now, or None if it is gone (or /proc cannot be read)."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    close = stat.rindex(b")")
    name = stat[stat.index(b"(") + 1 : close].decode(errors="replace")
    fields = stat[close + 2 :].split()
    # After the name: state, ppid, pgrp, session, ..., starttime (the 20th).
    return Process(pid, int(fields[19]), int(fields[1]), int(fields[2]), name, fields[0].decode())


def all_processes() -> list[Process]:
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(PROC):
            if entry.name.isdigit() and (process := read_process(int(entry.name))) is not None:
                found.append(process)
    return found


class CommandProcesses:
    """What one shell command started; see the module docstring."""

    def __init__(self) -> None:
        self.mark = secrets.token_hex(8)
        self.shell_pid: int | None = None  # It leads the command's process group.
        self.pipe: str | None = None  # "pipe:[inode]" of the command's output.
        self._known: dict[int, Process] = {}
        self._shell_started = 0  # Its start time, if known: older processes are not its.

    @property
    def environment(self) -> dict[str, str]:
        """The variable to add to the command's environment."""
        return {MARK_VARIABLE: self.mark}

    def started(self, pid: int, output_fd: int | None) -> None:
        """The shell is process `pid`, writing to the pipe whose read end is `output_fd`."""
        self.shell_pid = pid
        if (shell := read_process(pid)) is not None:
            self._known[pid] = shell
            self._shell_started = shell.started
        if output_fd is not None:
            with contextlib.suppress(OSError):
                self.pipe = f"pipe:[{os.fstat(output_fd).st_ino}]"

    def look(self, *, thorough: bool = False) -> list[Process]:
        """Find the command's living processes now (and remember them); the shell's too.

        A look follows the parent links; a `thorough` one also reads every
        process's environment and open files for the mark and the pipe.
        """
        if self.shell_pid is None:
            return []
        processes = all_processes()
        by_pid = {p.pid: p for p in processes}
        # What was remembered and still is the same process (not a reused pid).
        mine = {
            pid: by_pid[pid]
            for pid, known in self._known.items()
            if pid in by_pid and by_pid[pid].started == known.started
        }
        children: dict[int, list[Process]] = {}
        for process in processes:
            children.setdefault(process.parent, []).append(process)
        me = os.getpid()
        for process in processes if thorough else ():
            # Only a process as young as the shell can hold the mark or the pipe.
            young = process.started >= self._shell_started
            if (
                young
                and process.pid not in mine
                and process.pid != me
                and self._marked(process.pid)
            ):
                mine[process.pid] = process
        todo = list(mine)
        while todo:
            for child in children.get(todo.pop(), []):
                if child.pid not in mine and child.pid != me:
                    mine[child.pid] = child
                    todo.append(child.pid)
        self._known.update(mine)
        return [p for p in mine.values() if p.alive]

    def _marked(self, pid: int) -> bool:
        """Whether `pid` has the command's mark in its environment, or holds its output."""
        mark = f"\0{MARK_VARIABLE}={self.mark}\0".encode()
        with contextlib.suppress(OSError):
            if mark in b"\0" + (PROC / str(pid) / "environ").read_bytes():
                return True
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                for fd in os.scandir(PROC / str(pid) / "fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) == self.pipe:
                            return True
        return False

    def sweep(self) -> list[Process]:
        """SIGKILL every living process of the command; returns those outside its group.

        Repeated while it finds more: one may fork while the others die.
        """
        if self.shell_pid is None:
            return []
        killed: dict[int, Process] = {}
        for _ in range(10):
            found = [p for p in self.look(thorough=True) if p.pid not in killed]
            if not found:
                break
            for process in found:
                _kill(process)
                killed[process.pid] = process
        shell = self.shell_pid  # Its group's id.
        return [p for p in killed.values() if p.group != shell and p.pid != shell]

    async def survivors(self, killed: list[Process]) -> list[Process]:
        """Those of `killed` still alive after at most `KILL_WAIT` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_WAIT
        while True:
            living = [p for p in killed if _still(p)]
            if not living or loop.time() >= deadline:
                return living
            await asyncio.sleep(0.005)


def _still(process: Process) -> bool:
    """Whether `process` (that very one, not its pid's next owner) is alive."""
    now = read_process(process.pid)
    return now is not None and now.started == process.started and now.alive


def _kill(process: Process) -> bool:
    """SIGKILL `process` if its pid still names it; False if the kill was refused."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return True  # Gone already.
    except (AttributeError, OSError):  # No pidfd here: check, then kill by pid.
        if _still(process):
            with contextlib.suppress(ProcessLookupError):
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except PermissionError:
                    return False
        return True
    try:
        if _still(process):  # The pidfd holds this very process now.
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except PermissionError:
        return False
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    return True
