"""The built-in tools: clock, calculator, files confined to the workspace, and the shell."""

from __future__ import annotations

import asyncio
import os
import re
import time
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
from chatui.tools.shell import ShellResult, run_shell
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
