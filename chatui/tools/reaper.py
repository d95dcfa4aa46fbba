"""The supervisor of one shell command: a child subreaper that ends all the command started.

chatui runs each shell command under this small program, started as
`python -I -S -c <this file's text> COMMAND` in a session of its own. It
imports nothing of chatui and nothing slow to import (about 11 ms to start).

Why: killing the command's process group ends what stays in it, but a
process that leaves the group (`setsid`, `setpgid`, a daemon's double fork)
is beyond a group kill, and once its parent exits it is an orphan, which the
kernel hands to init. There nothing tells it from any other program: it may
have cleared its environment and closed its files. This program makes itself
a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so the orphans of
anything below it come to it instead: every process the command started
stays its descendant for as long as it lives. Nothing has to watch the
command while it runs, and no scan of all processes is needed. chatui itself
is not made a subreaper: that would hold for the whole program, and every
orphan of anything it runs would become its child.

What it does:

- It starts `/bin/sh -c COMMAND` in a process group of its own (the shell's
  pid is the group's id, reported first), with no input, its errors joined
  to its output on this program's standard output, which this program then
  lets go of: the output ends when the last of the command's processes does.
- It waits until the shell exits, a SIGTERM comes (a stop or a timeout:
  chatui kills the command's group itself at once, then asks this program
  to finish), or its standard input, a pipe from chatui, ends (chatui is gone).
- Then it kills (SIGKILL) the shell's group, then every descendant still
  alive, found through `/proc/<pid>/task/<tid>/children` from itself down,
  round after round (a killed parent's children come to it) until the shell
  is dead and it has no other child, and reaps them.
- It reports on its standard error, a line each: `shell PID`; `untracked`
  if it could not become a subreaper (orphans then go to init, unseen);
  `left PID KILLED NAME` for each process outside the shell's group that was
  still running, KILLED 1 if it was killed and 0 if it still runs (another
  user's, say), NAME its name's bytes in hex (untrusted text); `failed TEXT`
  (hex) if the shell could not start; and last `exit CODE`, the shell's exit
  code (negative: killed by that signal). Then it reaps the shell (last:
  until then its pid keeps the group's id, which chatui may still kill, from
  being given to another process) and exits.

Limits: killed itself with SIGKILL (the command may do so: it runs as the
same user), it cannot finish its work: its orphans go to init and live on,
and chatui's result says it lost track of them. (Stopped with SIGSTOP, it
goes on when chatui asks it to finish: chatui sends SIGCONT too.) A process
started through another program (a service manager, `at`) is not the
command's descendant.
"""

import _signal as signal  # type: ignore[import-not-found]  # The C module, untyped: `signal` imports enum (ms more to start).
import ctypes
import os
import select
import sys
import time

PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36  # From <linux/prctl.h>.
KILL_WAIT = 1.0  # Seconds for the killed processes to die before they are called survivors.
ROUND_WAIT = 0.005  # Seconds to wait for a child's death between two rounds of kills.


class suppress:
    """Ignore the exceptions `errors` in a `with` block (contextlib takes 2 ms to import)."""

    def __init__(self, *errors: type[BaseException]) -> None:
        self.errors = errors

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, self.errors)


def report(line: str) -> None:
    """One line to chatui (gone: nothing to tell, the work goes on)."""
    with suppress(OSError):
        os.write(2, f"{line}\n".encode())


def prctl(option: int, value: int) -> bool:
    """Linux's prctl(2); False if it failed."""
    try:
        result: int = ctypes.CDLL(None).prctl(option, value, 0, 0, 0)
        return result == 0
    except (OSError, AttributeError):
        return False


class Stat:
    """What /proc/<pid>/stat says of a process (None from `read`: it is gone)."""

    def __init__(self, name: bytes, state: bytes, parent: int, group: int) -> None:
        self.name, self.state, self.parent, self.group = name, state, parent, group

    @property
    def alive(self) -> bool:
        return self.state not in (b"Z", b"X")  # A zombie is dead; its parent reaps it.

    @staticmethod
    def read(pid: int) -> "Stat | None":
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            return None
        close = stat.rindex(b")")
        fields = stat[close + 2 :].split()  # State, parent, group, ...
        return Stat(stat[stat.index(b"(") + 1 : close], fields[0], int(fields[1]), int(fields[2]))


def children(pid: int) -> list[int]:
    """The children of `pid` (of each of its threads); none if it is gone."""
    if not CHILDREN_FILES:
        return [p for p in all_pids() if (stat := Stat.read(p)) is not None and stat.parent == pid]
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as file:
                found += [int(child) for child in file.read().split()]
        except OSError:
            pass
    return found


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


# A kernel built without them (CONFIG_PROC_CHILDREN) has every process's parent read instead.
CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def descendants() -> list[tuple[int, int]]:
    """(pid, parent) of every descendant of this process, parents first."""
    found = []
    todo = [os.getpid()]
    while todo:
        parent = todo.pop(0)
        for child in children(parent):
            found.append((child, parent))
            todo.append(child)
    return found


def kill(pid: int, parent: int) -> bool:
    """SIGKILL `pid` if it is still the child of `parent`; False if the kill is refused.

    A pidfd holds the very process while its parent is checked, so a pid that
    ended and was given to some other program is never killed.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # Gone already.
    except OSError:  # No pidfds here: check, then kill by pid.
        pidfd = None
    try:
        now = Stat.read(pid)
        if now is None or now.parent != parent:
            return True  # Gone, or moved here: the next round finds it.
        if pidfd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True


def reap_others(shell: int) -> int | None:
    """Reap every dead child but the shell; the shell's exit code once it is dead (not reaped)."""
    while True:
        try:
            dead = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if dead is None:
            return None
        if dead.si_pid == shell:
            return exit_code(dead)
        os.waitpid(dead.si_pid, 0)


def shell_exit(shell: int) -> int | None:
    """The shell's exit code if it is dead (it is not reaped), else None."""
    try:
        dead = os.waitid(os.P_PID, shell, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if dead is None else exit_code(dead)


def exit_code(dead: os.waitid_result) -> int:
    """As Python's subprocess gives it: the exit status, or minus the killing signal."""
    return dead.si_status if dead.si_code == os.CLD_EXITED else -dead.si_status


def reap_children(shell: int) -> None:
    """Reap the dead children but the shell (which waitid would give first)."""
    for child in children(os.getpid()):
        if child != shell:
            with suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


def wait(poller: "select.poll", wake: int, seconds: float | None) -> bool:
    """Wait for a signal or chatui's end; True if asked to finish (SIGTERM, input ended)."""
    for fd, _ in poller.poll(None if seconds is None else seconds * 1000):
        if fd == 0:
            return True  # chatui closed the pipe, or is gone.
        try:
            if signal.SIGTERM in os.read(wake, 512):
                return True
        except BlockingIOError:
            pass
    return False


def sweep(shell: int, poller: "select.poll", wake: int) -> tuple[dict[int, bytes], set[int]]:
    """Kill every descendant; returns those outside the shell's group, and the survivors.

    A walk of the tree can miss a process whose parent dies during it (it
    moves to this one after this one's children were read), so the end is
    not a walk that finds nothing alive: it is the shell dead and no other
    child left (a process becomes a zombie only once its children have moved
    here). Or, if some process cannot be killed, a round with nothing dying.
    """
    left: dict[int, bytes] = {}  # Outside the shell's group and running when found.
    deadline = time.monotonic() + KILL_WAIT
    while True:
        living, refused, dying = [], [], False
        for pid, parent in descendants():
            stat = Stat.read(pid)
            if stat is None or not stat.alive:
                dying = dying or (stat is not None and pid != shell)
                continue
            if stat.group != shell:
                left.setdefault(pid, stat.name)
            living.append(pid)
            if not kill(pid, parent):
                refused.append(pid)
        reap_children(shell)
        shell_dead = shell_exit(shell) is not None
        others = {child for child in children(os.getpid()) if child != shell}
        if shell_dead and not others:
            return left, set()
        # Only what cannot be killed is left, all seen, and nothing is dying.
        settled = not dying and len(living) == len(refused) and others <= set(living)
        if (shell_dead and settled) or time.monotonic() >= deadline:
            return left, set(living)
        wait(poller, wake, ROUND_WAIT)


def start_shell(command: str) -> int:
    """Start `/bin/sh -c command` in a process group of its own; returns its pid.

    A fork and an exec, not posix_spawn: glibc's leaves its own signals (32
    and 33) ignored in the program it starts, and so in all the command runs.
    """
    failures = os.dup(2)  # Not the shell's: a new descriptor is closed on exec.
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            # Python ignores these; its subprocess gives a program their defaults back.
            # The signals caught here go back to theirs on exec.
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(1, 2)  # Its errors joined to its output.
            os.execv("/bin/sh", ["/bin/sh", "-c", command])
        except OSError as error:
            with suppress(OSError):
                os.write(failures, f"failed {(error.strerror or '').encode().hex()}\n".encode())
        finally:
            os._exit(127)
    os.close(failures)
    with suppress(OSError):
        os.setpgid(pid, pid)  # As the child does: its group exists once either has.
    return pid


def main(command: str) -> None:
    tracked = prctl(PR_SET_CHILD_SUBREAPER, 1)
    # The command runs as the same user: it may not open this program's files through
    # /proc (its report to chatui), nor trace it. (An exec makes the shell dumpable again.)
    prctl(PR_SET_DUMPABLE, 0)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    for number in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(number, lambda number, frame: None)  # The wake-up pipe says which.
    shell = start_shell(command)
    report(f"shell {shell}")
    if not tracked:
        report("untracked")
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 1)  # The output is the command's alone now.
    os.close(null)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    while reap_others(shell) is None and not wait(poller, wake_read, None):
        pass  # The shell runs, and chatui has not asked to finish.
    poller.unregister(0)  # Ended or not, chatui's pipe has nothing more to say.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(shell, signal.SIGKILL)
    left, living = sweep(shell, poller, wake_read)
    code = shell_exit(shell)
    for pid, name in left.items():
        report(f"left {pid} {0 if pid in living else 1} {name.hex()}")
    if code is not None:
        report(f"exit {code}")
        # The shell is reaped last: until now its pid held its group's id, which chatui
        # may still kill, for no other process group to be given.
        os.waitpid(shell, 0)


if __name__ == "__main__":
    main(sys.argv[1])
    os._exit(0)  # Nothing to tidy: the interpreter's teardown would cost a core milliseconds.
