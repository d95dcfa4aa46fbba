"""The `chatui` command where there is no terminal: one line on stderr and an exit, never a UI.

Each case runs the real command as a subprocess with its stdin or stdout
on a pipe, a file or /dev/null (and the other on a pseudo-terminal of the
test's when it must be one), bounded by a timeout: a chatui that started
its UI instead would draw into the pipe and never exit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BOUND = 60.0  # Seconds: a bound on a hang, not pacing; the refusal takes well under one.
ESCAPE = re.compile(r"\x1b")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A config with a remote provider that needs nothing (no model to load, no network)."""
    config = tmp_path / "config.toml"
    config.write_text('provider = "openai"\n[openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    return {
        **os.environ,
        "CHATUI_CONFIG": str(config),
        "CHATUI_DB": str(tmp_path / "chat.sqlite3"),
        "TERM": "xterm-256color",
    }


@pytest.fixture
def terminal() -> Iterator[int]:
    """The far end of a pseudo-terminal: a terminal for the side that must be one."""
    controller, far_end = os.openpty()
    yield far_end
    os.close(far_end)
    os.close(controller)


def chatui(env: dict[str, str], *args: str, **streams: Any) -> subprocess.CompletedProcess[bytes]:
    """Run `chatui ARGS`; `streams` says where its stdin and stdout are (stdout: a pipe)."""
    return subprocess.run(
        [sys.executable, "-m", "chatui", *args],
        **{"stdout": subprocess.PIPE, **streams},
        stderr=subprocess.PIPE,
        env=env,
        timeout=BOUND,  # On expiry the process is killed and the test fails.
    )


def refusal(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line chatui said on stderr, checked: no UI, no traceback, a non-zero exit."""
    assert result.returncode != 0
    assert not ESCAPE.search((result.stdout or b"").decode(errors="replace"))
    said = result.stderr.decode()
    assert not ESCAPE.search(said) and "Traceback" not in said
    assert said.endswith("\n") and said.count("\n") == 1, said
    assert "chatui needs a terminal" in said and "Run it in a terminal." in said
    assert "give the prompt with -p PROMPT (or pipe it in)" in said
    return said


def test_with_stdin_on_a_pipe_the_piped_text_is_answered_without_the_ui(
    env: dict[str, str], terminal: int
) -> None:
    """`echo hi | chatui` is a headless run (tests/test_headless.py): here nothing listens."""
    result = chatui(env, input=b"hi\n", stdout=terminal)

    said = result.stderr.decode()
    assert result.returncode == 1 and said.count("\n") == 1 and "Traceback" not in said
    assert said.startswith("chatui: Nothing answers at http://127.0.0.1:9/v1")


def test_with_stdout_on_a_pipe_chatui_says_it_needs_a_terminal_and_exits(
    env: dict[str, str], terminal: int
) -> None:
    result = chatui(env, stdin=terminal, stdout=subprocess.PIPE)

    said = refusal(result)
    assert result.stdout == b""
    assert "stdout is not a terminal (a pipe)" in said and "stdin" not in said


def test_with_stdout_into_a_file_the_file_stays_empty(
    env: dict[str, str], terminal: int, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as file:
        said = refusal(chatui(env, stdin=terminal, stdout=file))

    assert "stdout is not a terminal (a file)" in said
    assert out.read_bytes() == b""


def test_with_neither_a_terminal_both_are_named(env: dict[str, str]) -> None:
    said = refusal(chatui(env, stdin=subprocess.DEVNULL))

    assert "stdin is not a terminal (/dev/null)" in said
    assert "stdout is not a terminal (a pipe)" in said


def test_with_stdin_closed_chatui_says_so(env: dict[str, str], terminal: int) -> None:
    said = refusal(chatui(env, stdout=terminal, preexec_fn=lambda: os.close(0)))

    assert "stdin is not a terminal (closed)" in said


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_need_no_terminal(env: dict[str, str], flag: str) -> None:
    result = chatui(env, flag, stdin=subprocess.DEVNULL)

    assert result.returncode == 0 and result.stderr == b""
    assert b"chatui" in result.stdout and not ESCAPE.search(result.stdout.decode())


def test_a_config_error_is_still_said_without_a_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The config is read first: its error is the one to fix, and it needs no terminal."""
    Path(env["CHATUI_CONFIG"]).write_text("colour = 1\n")

    result = chatui(env, stdin=subprocess.DEVNULL)

    assert result.returncode == 2 and b"colour" in result.stderr
