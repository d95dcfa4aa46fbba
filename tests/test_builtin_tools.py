"""The built-in tools: clock, calculator, files confined to the workspace, and the shell."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from processes import group_alive, living, marker, nested_sleepers, until_running

from chatui.cancel import CancelToken, current_token
from chatui.config import ToolsConfig
from chatui.messages import ToolCallPart
from chatui.tools import build_registry
from chatui.tools.calculator import CalculationError, calculate
from chatui.tools.files import Workspace, list_directory, read_text_file
from chatui.tools.registry import ToolFailed
from chatui.tools.shell import DRAIN_WAIT, ShellResult, run_shell
from chatui.turn import Approval

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

    async def slow_spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawning.set()
        result = await original(*args, **kwargs)
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
        while living(mark):
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
    elif how == "setsid, environment cleared":  # Found by its hold on the output.
        start = f"env -i setsid sleep {mark} &"
    elif how == "setpgid":
        code = f"import os; os.setpgid(0, 0); os.execvp('sleep', ['sleep', '{mark}'])"
        start = f"{python} -c {shlex.quote(code)} &"
    else:  # Double fork and setsid: the sleeper's parent is gone before the command ends.
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


@pytest.mark.parametrize("how", ["setsid", "setsid, environment cleared", "setpgid", "double fork"])
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
    from chatui.tools import process_tree

    def refused(process: process_tree.Process) -> bool:
        return False

    monkeypatch.setattr(process_tree, "_kill", refused)
    monkeypatch.setattr(process_tree, "KILL_WAIT", 0.2)
    result = await run_shell(leaves_the_group(mark, "setsid"), cwd=tmp_path, timeout=30, limit=1000)

    ((pid, name),) = result.survivors
    assert name == "sleep" and living(mark)[0].pid == pid and result.stopped == []
    assert result.note == (
        f"[1 process the command left running outside its process group could not be "
        f"stopped and still runs: sleep (pid {pid})]"
    )
