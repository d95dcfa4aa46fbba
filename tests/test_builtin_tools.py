"""The built-in tools: clock, calculator, files confined to the workspace, and the shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chatui.cancel import CancelToken, current_token
from chatui.config import ToolsConfig
from chatui.messages import ToolCallPart
from chatui.tools import shell
from chatui.tools.builtin import build_registry
from chatui.tools.calculator import CalculationError, calculate
from chatui.tools.files import Workspace, list_directory, read_text_file
from chatui.tools.protocol import Approval
from chatui.tools.registry import ToolFailed
from chatui.tools.shell import DRAIN_WAIT, ShellResult, run_shell
from tests.support.processes import group_alive, living, marker, nested_sleepers, until_running

# The calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("2^10", 1024),
        ("7 // 2 + 7 % 2", 4),
        ("-3 ** 2", -9),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(pi, 3)", 3.142),
        ("max(1, 5, 3) × 2 ÷ 4", 2.5),
    ],
)
def test_the_calculator_computes_arithmetic(expression: str, value: float) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "not allowed in arithmetic"),
        ("().__class__", "not allowed in arithmetic"),
        ("'a' * 3", "only numbers are allowed"),
        ("x + 1", "unknown name 'x'"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 10000", "too large"),
        ("exp(1000)", "too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "cannot compute it"),
        ("2 +", "not an arithmetic expression"),
        ("1" * 1001, "longer than 1000"),
        ("lambda: 1", "not allowed"),
        ("True + 1", "only numbers are allowed"),
    ],
)
def test_the_calculator_refuses_what_is_not_plain_arithmetic(expression: str, problem: str) -> None:
    with pytest.raises(CalculationError, match=re.escape(problem)):
        calculate(expression)


async def test_the_calculate_tool_says_what_went_wrong(tmp_path: Path) -> None:
    registry = build_registry(ToolsConfig(), workspace=tmp_path)
    ok = await run(registry, "calculate", '{"expression": "6*7"}')
    bad = await run(registry, "calculate", '{"expression": "open(\'x\')"}')

    assert (ok.state, ok.content) == ("ok", "42")
    assert bad.state == "error"
    assert bad.content == "Cannot calculate: unknown function 'open' (known: " + (
        "sqrt, exp, log, log10, log2, sin, cos, tan, asin, acos, atan, abs, round, floor, ceil, "
        "min, max)."
    )


# The clock


async def test_the_clock_gives_now_in_the_zone_asked_for(tmp_path: Path) -> None:
    registry = build_registry(ToolsConfig(), workspace=tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)
    result = await run(registry, "current_datetime", '{"timezone": "Asia/Tokyo"}')
    after = datetime.now(UTC)
    unknown = await run(registry, "current_datetime", '{"timezone": "Mars/Olympus"}')

    assert result.state == "ok"
    match = re.fullmatch(r"(\w+) (\S+ \S+) JST \(UTC\+0900\)", result.content)
    assert match is not None, result.content
    moment = datetime.strptime(match[2], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert before <= moment <= after and match[1] == moment.strftime("%A")
    assert unknown.state == "error" and "Unknown time zone 'Mars/Olympus'" in unknown.content


# Files in the workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("café\nline two\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1") * 10)
    (tmp_path / "secret.txt").write_text("outside")
    (root / "inside-link").symlink_to(root / "docs" / "notes.txt")
    (root / "escape-link").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    return Workspace(root)


def test_a_text_file_inside_the_workspace_is_read(workspace: Workspace) -> None:
    assert read_text_file(workspace, "docs/notes.txt") == "café\nline two\n"
    assert read_text_file(workspace, "./docs/../docs/notes.txt") == "café\nline two\n"
    assert read_text_file(workspace, "inside-link") == "café\nline two\n"  # It stays inside.
    absolute = str(workspace.root / "docs" / "notes.txt")
    assert read_text_file(workspace, absolute) == "café\nline two\n"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../secret.txt", "Refused: '../secret.txt' is a path outside the workspace"),
        ("docs/../../secret.txt", "is a path outside the workspace"),
        ("/etc/passwd", "Refused: '/etc/passwd' is a path outside the workspace"),
        ("escape-link", "Refused: 'escape-link' is a symlink that leads outside the workspace"),
        ("escape-dir/secret.txt", "is a symlink that leads outside the workspace"),
        ("image.png", "'image.png' is a binary file; only text files are read."),
        ("latin1.txt", "'latin1.txt' is a binary file"),
        ("missing.txt", "'missing.txt' does not exist in the workspace."),
        ("docs", "'docs' is a directory: list it instead."),
        ("docs\0x", "Refused: the path holds a NUL character."),
    ],
)
def test_reading_outside_the_workspace_or_a_binary_is_refused(
    workspace: Workspace, path: str, problem: str
) -> None:
    with pytest.raises(ToolFailed) as refusal:
        read_text_file(workspace, path)
    assert problem in str(refusal.value)
    assert "outside" not in read_text_file(workspace, "docs/notes.txt")


def test_a_named_pipe_or_a_socket_in_the_workspace_is_refused_without_blocking(
    workspace: Workspace,
) -> None:
    """Opening a pipe nobody writes blocks for ever: it is refused before anything is opened."""
    os.mkfifo(workspace.root / "pipe")
    (workspace.root / "pipe-link").symlink_to(workspace.root / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(workspace.root / "sock"))
    cases = {"pipe": "a named pipe", "pipe-link": "a named pipe", "sock": "a socket"}
    outcomes: dict[str, str] = {}

    def read_all() -> None:
        for path in cases:
            try:
                outcomes[path] = read_text_file(workspace, path)
            except ToolFailed as refusal:
                outcomes[path] = str(refusal)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(5)
    try:
        assert not reader.is_alive(), "read_file blocked on the named pipe"
    finally:
        with contextlib.suppress(OSError):  # Let a blocked reader go: a writer came.
            os.close(os.open(workspace.root / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        server.close()
    for path, kind in cases.items():
        shown = "pipe" if path == "pipe-link" else path
        assert outcomes[path] == f"{shown!r} is {kind}, not a regular file: only files are read."


def test_a_long_file_is_cut_with_a_note(workspace: Workspace) -> None:
    (workspace.root / "long.txt").write_text("x" * 5000)
    text = read_text_file(workspace, "long.txt", max_chars=1000)
    assert text.startswith("x" * 1000)
    assert text.endswith("[… cut: the file has 5,000 bytes; the first 1,000 characters shown]")


def test_a_directory_is_listed_with_kinds_and_sizes(workspace: Workspace) -> None:
    listing = list_directory(workspace, ".")
    assert listing.splitlines() == [
        "./ (6 entries)",
        "docs/",
        f"escape-dir -> {workspace.root.parent}",
        f"escape-link -> {workspace.root.parent / 'secret.txt'}",
        "image.png  (16 bytes)",
        f"inside-link -> {workspace.root / 'docs' / 'notes.txt'}",
        "latin1.txt  (120 bytes)",
    ]
    assert list_directory(workspace, "docs") == "docs/ (1 entries)\nnotes.txt  (15 bytes)"
    with pytest.raises(ToolFailed, match="is a symlink that leads outside"):
        list_directory(workspace, "escape-dir")
    with pytest.raises(ToolFailed, match="is a path outside"):
        list_directory(workspace, "..")


# The shell


async def test_a_command_runs_in_the_workspace_with_its_exit_code(tmp_path: Path) -> None:
    result = await run_shell("pwd; echo oops >&2; exit 3", cwd=tmp_path, timeout=10, limit=1000)
    assert result.exit_code == 3
    assert result.output == f"{tmp_path}\noops\n"


async def test_long_output_keeps_its_start_and_end(tmp_path: Path) -> None:
    command = "seq 1 100000"
    result = await run_shell(command, cwd=tmp_path, timeout=10, limit=200)
    full = "".join(f"{n}\n" for n in range(1, 100001))
    assert result.exit_code == 0 and result.cut == len(full) - 200
    head, tail = result.output.split(f"\n[… {result.cut:,} bytes of output cut …]\n")
    assert full.startswith(head) and len(head) == 100
    assert full.endswith(tail) and len(tail) == 100


async def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    mark = marker()
    started = time.monotonic()
    result = await run_shell(
        f"echo started; {nested_sleepers(mark)}", cwd=tmp_path, timeout=0.5, limit=1000
    )
    assert result.exit_code is None and result.output == "started\n"
    assert time.monotonic() - started < 5
    assert living(mark) == []


async def test_a_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    mark = marker()
    task = asyncio.create_task(
        run_shell(nested_sleepers(mark), cwd=tmp_path, timeout=60, limit=1000)
    )
    child, grandchild = await until_running(mark, 2)
    assert child.pgid == grandchild.pgid  # One group, which the kill takes whole.

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert living(mark) == [] and not group_alive(child.pgid)


async def test_background_processes_do_not_outlive_the_command(tmp_path: Path) -> None:
    mark = marker()
    result = await run_shell(f"sleep {mark} & echo left", cwd=tmp_path, timeout=10, limit=1000)
    assert result.exit_code == 0 and result.output == "left\n"
    assert living(mark) == []


async def test_the_shell_tool_always_asks_and_keeps_control_bytes_raw(tmp_path: Path) -> None:
    registry = build_registry(ToolsConfig(ask=[]), workspace=tmp_path)
    asked: list[str] = []

    async def approve(call: ToolCallPart) -> Approval:
        asked.append(call.name)
        return Approval.ONCE

    result = await run(registry, "shell", r'{"command": "printf \"\\033[2Jred\\n\""}', approve)

    assert asked == ["shell"]
    assert result.content == "\x1b[2Jred\n[exit code 0]"  # Raw for the model; the UI shows it.
    assert registry.needs_approval("shell") and not registry.needs_approval("read_file")


def test_the_config_chooses_the_tools_and_which_ask(tmp_path: Path) -> None:
    config = ToolsConfig(enabled=["calculate", "read_file"], ask=["calculate"])
    registry = build_registry(config, workspace=tmp_path)
    assert registry.names == ["calculate", "read_file"]
    assert registry.needs_approval("calculate") and not registry.needs_approval("read_file")
    assert build_registry(ToolsConfig(enabled=[]), workspace=tmp_path).specs() == []


async def run(registry, name: str, arguments: str, approve=None):  # type: ignore[no-untyped-def]
    async def yes(call: ToolCallPart) -> Approval:
        return Approval.ONCE

    async def report(status: str) -> None:
        pass

    call = ToolCallPart("c1", name, arguments, complete=True)
    return await registry.run(call, approve or yes, report)


def test_the_file_tools_use_the_configured_workspace(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("in the workspace")
    registry = build_registry(ToolsConfig(workspace=str(tmp_path)))
    result = asyncio.run(run(registry, "read_file", '{"path": "a.txt"}'))
    assert result.content == "in the workspace"
    assert os.getcwd() != str(tmp_path)


async def test_a_stop_while_the_command_starts_still_kills_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled before the spawn returned: the group goes as soon as it exists."""
    mark = marker()
    loop = asyncio.get_running_loop()
    original = loop.subprocess_exec
    spawning, spawned = asyncio.Event(), asyncio.Event()
    transports = []

    async def slow_spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawning.set()
        result = await original(*args, **kwargs)
        transports.append(result[0])
        await until_running(mark, 2)  # Its children exist before the spawn returns.
        spawned.set()
        return result

    monkeypatch.setattr(loop, "subprocess_exec", slow_spawn)
    task = asyncio.create_task(
        run_shell(nested_sleepers(mark), cwd=tmp_path, timeout=60, limit=1000)
    )
    await spawning.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await spawned.wait()

    async with asyncio.timeout(5):
        while living(mark) or not transports[0].is_closing():  # Closed once it has exited.
            await asyncio.sleep(0.001)


async def test_the_shell_does_not_get_the_api_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment")
    monkeypatch.setenv("CHATUI_TEST_VISIBLE", "yes")
    result = await run_shell("env", cwd=tmp_path, timeout=10, limit=100_000)
    assert "CHATUI_TEST_VISIBLE=yes" in result.output
    assert "API_KEY" not in result.output


def test_a_missing_workspace_is_named_as_such(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "gone")
    with pytest.raises(
        ToolFailed, match=r"The workspace .*gone is not a directory \(tools.workspace\)"
    ):
        read_text_file(workspace, "a.txt")


async def test_the_stop_itself_kills_the_group_before_the_task_runs_again(
    tmp_path: Path,
) -> None:
    """Esc handled in a busy frame: the group dies then, not at the task's next step."""
    mark = marker()
    token = CancelToken()

    async def turn_task() -> ShellResult:
        current_token.set(token)  # As the turn sets it for its tools.
        return await run_shell(nested_sleepers(mark), cwd=tmp_path, timeout=60, limit=1000)

    task = asyncio.create_task(turn_task())
    await until_running(mark, 2)

    token.cancel()  # No await from here on: the task cannot run.
    deadline = time.monotonic() + 5
    while living(mark) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert living(mark) == []

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# What a command leaves running outside its process group


def leaves_the_group(mark: str, how: str) -> str:
    """A command that starts `sleep <mark>` outside its process group (`how`), then returns.

    It returns once the sleeper runs (its command line is in /proc): not before.
    """
    python = shlex.quote(sys.executable)
    if how == "setsid":
        start = f"setsid sleep {mark} &"
    elif how == "setsid -f, environment cleared, output closed":  # No mark, no pipe held.
        start = f"setsid -f env -i sleep {mark} >/dev/null 2>&1 </dev/null;"
    elif how == "setsid, environment cleared":  # It holds the output still.
        start = f"env -i setsid sleep {mark} &"
    elif how == "setpgid":
        code = f"import os; os.setpgid(0, 0); os.execvp('sleep', ['sleep', '{mark}'])"
        start = f"{python} -c {shlex.quote(code)} &"
    elif how == "double fork":  # The sleeper's parent is gone before the command ends.
        code = (
            "import os\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{mark}'])\n"
            "    os._exit(0)\n"
            "os.wait()\n"
        )
        start = f"{python} -c {shlex.quote(code)};"
    elif how == "double fork, environment cleared, files closed":
        sleep = shutil.which("sleep")
        code = (
            "import os\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        os.closerange(0, 1024)\n"
            f"        os.execve({sleep!r}, ['sleep', '{mark}'], {{}})\n"
            "    os._exit(0)\n"
            "os.wait()\n"
        )
        start = f"{python} -c {shlex.quote(code)};"
    else:
        raise ValueError(how)
    # The sleeper's command line, not grep's own ("slee[p]"), nor setsid's before its exec.
    running = f"grep -qsa '^slee[p].{mark}' /proc/[0-9]*/cmdline"
    return f"{start} until {running}; do sleep 0.01; done; echo left"


@pytest.fixture
def mark() -> Iterator[str]:
    """A sleeper's marker; whatever the test leaves alive with it is killed afterwards."""
    mark = marker()
    yield mark
    for leftover in living(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover.pid, 9)


async def gone(mark: str, timeout: float = 5.0) -> bool:
    """Whether no `sleep <mark>` lives, waiting up to `timeout` s for it to be so."""
    deadline = time.monotonic() + timeout
    while living(mark) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return not living(mark)


ESCAPES = [
    "setsid",
    "setsid, environment cleared",
    "setpgid",
    "double fork",
    "setsid -f, environment cleared, output closed",
    "double fork, environment cleared, files closed",
]


@pytest.mark.parametrize("how", ESCAPES)
async def test_a_process_that_leaves_the_group_is_killed_and_the_result_says_so(
    tmp_path: Path, mark: str, how: str
) -> None:
    started = time.monotonic()
    result = await run_shell(leaves_the_group(mark, how), cwd=tmp_path, timeout=30, limit=1000)

    assert result.exit_code == 0 and result.output == "left\n"
    assert await gone(mark), f"the sleeper that left by {how} outlived the command"
    assert time.monotonic() - started < DRAIN_WAIT  # Its hold on the output did not delay it.
    ((pid, name),) = result.stopped
    assert name == "sleep" and result.survivors == []
    assert result.note == (
        f"[1 process the command left running outside its process group was stopped: "
        f"sleep (pid {pid})]"
    )


async def test_the_shell_tool_tells_the_model_what_was_left_running(
    tmp_path: Path, mark: str
) -> None:
    registry = build_registry(ToolsConfig(ask=[]), workspace=tmp_path)
    arguments = json.dumps({"command": leaves_the_group(mark, "setsid")})

    result = await run(registry, "shell", arguments)

    assert await gone(mark)
    assert re.fullmatch(
        r"left\n\[exit code 0\]\n\[1 process the command left running outside its process "
        r"group was stopped: sleep \(pid \d+\)\]",
        result.content,
    )


async def test_a_stop_kills_what_left_the_group_too(tmp_path: Path, mark: str) -> None:
    command = f"setsid sleep {mark} & sleep {mark}"
    task = asyncio.create_task(run_shell(command, cwd=tmp_path, timeout=60, limit=1000))
    await until_running(mark, 2)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await gone(mark)


async def test_a_command_past_its_timeout_has_what_left_the_group_killed(
    tmp_path: Path, mark: str
) -> None:
    command = f"setsid sleep {mark} & sleep {mark}"
    result = await run_shell(command, cwd=tmp_path, timeout=0.5, limit=1000)

    assert result.exit_code is None
    assert await gone(mark)
    assert [name for _, name in result.stopped] == ["sleep"]


async def test_what_cannot_be_killed_is_named_as_still_running(
    tmp_path: Path, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the kill cannot reach (another user's, say) is not claimed to be stopped."""
    header = "def kill(pid: int, parent: int) -> bool:\n"
    refusing = shell.SUPERVISOR.replace(
        header,
        f"{header}    return False  # Refused.\n\n\ndef kill_as_before(pid: int, parent: int):\n",
    )
    assert refusing != shell.SUPERVISOR
    monkeypatch.setattr(shell, "SUPERVISOR", refusing)  # Its kills of single processes fail.
    result = await run_shell(leaves_the_group(mark, "setsid"), cwd=tmp_path, timeout=30, limit=1000)

    ((pid, name),) = result.survivors
    assert name == "sleep" and living(mark)[0].pid == pid and result.stopped == []
    assert result.note == (
        f"[1 process the command left running outside its process group could not be "
        f"stopped and still runs: sleep (pid {pid})]"
    )


@pytest.mark.parametrize("how", ESCAPES[-2:])
async def test_a_stop_kills_what_left_the_group_without_a_trace(
    tmp_path: Path, mark: str, how: str
) -> None:
    """Environment cleared, output closed, parent gone: still the command's, still killed."""
    token = CancelToken()

    async def turn_task() -> ShellResult:
        current_token.set(token)  # As the turn sets it for its tools.
        command = f"{leaves_the_group(mark, how)}; sleep {mark}"
        return await run_shell(command, cwd=tmp_path, timeout=60, limit=1000)

    task = asyncio.create_task(turn_task())
    await until_running(mark, 2)

    token.cancel()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert living(mark) == []  # Dead before the call ended, not some time after.


async def test_no_scan_of_all_processes_runs_on_the_event_loop(
    tmp_path: Path, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading every process in /proc costs tens of ms on a busy machine: never on the loop."""
    loop_thread = threading.get_ident()
    scans: list[str] = []

    def watched(original):  # type: ignore[no-untyped-def]
        def listing(path: object = ".", *args: object, **kwargs: object) -> object:
            if os.fspath(path).startswith("/proc") and threading.get_ident() == loop_thread:
                scans.append(os.fspath(path))
            return original(path, *args, **kwargs)

        return listing

    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", watched(os.scandir))
        patch.setattr(os, "listdir", watched(os.listdir))  # Path.iterdir's too.
        result = await run_shell(
            leaves_the_group(mark, "double fork"), cwd=tmp_path, timeout=30, limit=1000
        )

    assert [name for _, name in result.stopped] == ["sleep"]
    assert scans == []
    assert await gone(mark)


async def test_without_a_subreaper_the_result_says_what_left_is_not_tracked(
    tmp_path: Path, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not Linux: the group is killed, and the model is not told that nothing was left."""
    monkeypatch.setattr(shell, "SUPERVISED", False)
    escape = "setsid -f, environment cleared, output closed"
    in_group = marker()
    command = f"sleep {in_group} & {leaves_the_group(mark, escape)}"
    result = await run_shell(command, cwd=tmp_path, timeout=30, limit=1000)

    assert result.exit_code == 0 and result.output == "left\n"
    assert living(in_group) == [] and len(living(mark)) == 1  # Only the one that left lives.
    assert result.note == (
        "[processes the command starts outside its process group cannot be tracked on this "
        "system, so any it left running may still run]"
    )


async def test_a_command_that_kills_its_supervisor_is_told_what_that_means(
    tmp_path: Path, mark: str
) -> None:
    """The supervisor runs as the user: the command can kill it, and its orphans escape."""
    escape = "setsid -f, environment cleared, output closed"
    command = f"{leaves_the_group(mark, escape)}; kill -9 $PPID; sleep {mark}"
    registry = build_registry(ToolsConfig(ask=[]), workspace=tmp_path)

    result = await run(registry, "shell", json.dumps({"command": command}))

    assert result.content == (
        "left\n[exit code unknown]\n[the command's supervisor was killed, so processes the "
        "command left running outside its process group were not stopped and may still run]"
    )
    async with asyncio.timeout(5):  # The shell's group is killed all the same.
        while len(living(mark)) != 1:
            await asyncio.sleep(0.01)


async def test_when_chatui_is_gone_the_supervisor_kills_all_the_command_started(
    tmp_path: Path, mark: str
) -> None:
    """chatui killed outright: the supervisor's input ends, and it ends the command."""
    escape = "double fork, environment cleared, files closed"
    command = f"{leaves_the_group(mark, escape)}; sleep {mark}"
    with subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", shell.SUPERVISOR, command],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        start_new_session=True,
    ) as supervisor:
        assert supervisor.stdin is not None and supervisor.stderr is not None
        await until_running(mark, 2)
        supervisor.stdin.close()  # As when chatui's process ends.
        assert await gone(mark)
        report = supervisor.stderr.read().decode()
    assert re.fullmatch(r"shell \d+\nleft \d+ 1 736c656570\nexit -9\n", report)


async def test_the_command_gets_the_signals_a_program_starts_with(tmp_path: Path) -> None:
    """SIGPIPE not ignored (Python ignores it), nor glibc's own signals (32, 33)."""
    result = await run_shell("grep SigIgn /proc/self/status", cwd=tmp_path, timeout=10, limit=1000)
    ignored = int(result.output.split()[1], 16)
    for number in (13, 25, 32, 33):  # SIGPIPE, SIGXFSZ, glibc's two.
        assert not ignored & (1 << (number - 1)), number


async def test_a_command_killed_by_a_signal_has_its_negative_exit_code(tmp_path: Path) -> None:
    result = await run_shell("kill -TERM $$", cwd=tmp_path, timeout=10, limit=1000)
    assert result.exit_code == -15 and not result.timed_out


async def test_a_walk_that_misses_an_orphan_on_its_way_does_not_end_the_sweep(
    tmp_path: Path, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent that dies during a walk of the tree hands its children over unseen.

    The supervisor's first walk is made to see the shell alone, as when the
    sleeper moved to it between the reading of its children and the shell's:
    the sweep goes on until no child but the dead shell is left.
    """
    loop = "        for pid, parent in descendants():\n"
    missing = shell.SUPERVISOR.replace(
        loop,
        "        walk = descendants()\n"
        "        if not MISSED:\n"
        "            MISSED.append(walk)\n"
        "            walk = [(pid, parent) for pid, parent in walk if pid == shell]\n"
        "        for pid, parent in walk:\n",
    ).replace("\ndef sweep(", "\nMISSED = []\n\n\ndef sweep(")
    assert missing.count("MISSED") == 3
    monkeypatch.setattr(shell, "SUPERVISOR", missing)
    escape = "setsid -f, environment cleared, output closed"
    result = await run_shell(leaves_the_group(mark, escape), cwd=tmp_path, timeout=30, limit=1000)

    assert [name for _, name in result.stopped] == ["sleep"]
    assert await gone(mark)
