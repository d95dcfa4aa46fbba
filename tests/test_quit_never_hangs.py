"""Quitting never hangs, whatever a tool does: chatui in a real process, on a real terminal.

Each test starts `quit_target.py` (the app as the `chatui` command runs it)
on a pseudo-terminal, types a prompt whose reply calls a tool that blocks a
thread for ever (`read_file` on a named pipe, a sync tool that never
returns, an async one waiting in the event loop's default executor), or one
that refuses to be cancelled, then quits with SIGTERM or Ctrl+Q, and checks
that the process ends within a bounded time.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatui.app import QUIT_GRACE
from tests.support.processes import OnPty

ROOT = Path(__file__).resolve().parent.parent
QUIT_DEADLINE = 10.0  # Seconds; a quit takes well under one here.
AT_ONCE = QUIT_GRACE - 1  # Seconds: sooner than a first quit's wait for a stuck stop.
CTRL_Q = b"\x11"


class Target:
    """tests/support/quit_target.py on a pseudo-terminal, its database and its workspace."""

    def __init__(self, tmp_path: Path, case: str, timeout: float) -> None:
        self.db = tmp_path / "chat.sqlite3"
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir()
        os.mkfifo(self.workspace / "pipe")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # So that `tests.support` imports.
            "TERM": "xterm-256color",
            "TEXTUAL_ANIMATIONS": "none",
        }
        env.pop("TEXTUAL", None)
        argv = [sys.executable, "-m", "tests.support.quit_target", str(self.db)]
        self.app = OnPty([*argv, str(self.workspace), case, str(timeout)], env)
        self.app.wait_for(lambda: "idle" in self.app.output, timeout=60)
        self.app.write(b"go\r")

    def stored(self) -> list[tuple[str, str | None]]:
        """(kind, state) of each item stored so far, in order (a tool result's state too)."""
        try:
            with sqlite3.connect(self.db) as db:
                rows = db.execute("SELECT kind, state, data FROM items ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []  # Not written yet.
        return [(kind, state or json.loads(data).get("state")) for kind, state, data in rows]

    def turn_over(self) -> bool:
        """Whether the reply after the tool's result is stored, complete."""
        kinds = self.stored()
        return len(kinds) == 4 and kinds[3] == ("response", "complete")

    def tool_started(self) -> bool:
        return (self.workspace / "started").exists()

    def tool_cancelled(self) -> bool:
        return (self.workspace / "cancelled").exists()

    def quit(self, how: str) -> None:
        if how == "sigterm":
            os.kill(self.app.pid, signal.SIGTERM)
        else:
            self.app.write(CTRL_Q)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[list[Target]]:
    started: list[Target] = []
    yield started
    for each in started:
        each.app.close()


def start(targets: list[Target], tmp_path: Path, case: str, timeout: float) -> Target:
    targets.append(Target(tmp_path, case, timeout))
    return targets[-1]


@pytest.mark.parametrize("how", ["sigterm", "ctrl+q"])
def test_a_fifo_in_the_workspace_never_blocks_quitting(
    target: list[Target], tmp_path: Path, how: str
) -> None:
    app = start(target, tmp_path, "fifo", timeout=1.0)
    app.app.wait_for(app.turn_over, timeout=30)

    app.quit(how)

    assert app.app.exit_code(QUIT_DEADLINE) == 0, "chatui did not exit"
    assert "Traceback" not in app.app.output


@pytest.mark.parametrize(
    ("case", "moment", "how"),
    [
        ("sync", "while it runs", "sigterm"),
        ("sync", "after its timeout", "ctrl+q"),
        ("to_thread", "while it runs", "ctrl+q"),
        ("to_thread", "after its timeout", "sigterm"),
    ],
)
def test_a_tool_that_never_returns_never_blocks_quitting(
    target: list[Target], tmp_path: Path, case: str, moment: str, how: str
) -> None:
    running = moment == "while it runs"
    app = start(target, tmp_path, case, timeout=60.0 if running else 0.5)
    app.app.wait_for(app.tool_started if running else app.turn_over, timeout=30)

    app.quit(how)

    assert app.app.exit_code(QUIT_DEADLINE) == 0, "chatui did not exit"
    assert "Traceback" not in app.app.output
    if running:  # Quitting is a stop: the call's result says it was cancelled.
        assert app.stored()[2] == ("tool_result", "cancelled")


@pytest.mark.parametrize("how", ["sigterm", "ctrl+q"])
def test_a_tool_that_refuses_to_stop_never_blocks_quitting(
    target: list[Target], tmp_path: Path, how: str
) -> None:
    app = start(target, tmp_path, "stubborn", timeout=60.0)
    app.app.wait_for(app.tool_started, timeout=30)

    app.quit(how)

    app.app.wait_for(app.tool_cancelled, timeout=QUIT_DEADLINE)  # It swallowed the stop.
    # Quitting gives the stop QUIT_GRACE seconds, then leaves it behind.
    assert app.app.exit_code(QUIT_GRACE + QUIT_DEADLINE) is not None, "chatui did not exit"


@pytest.mark.parametrize("how", ["sigterm", "ctrl+q"])
def test_quitting_again_ends_chatui_at_once_even_if_a_tool_refuses_to_stop(
    target: list[Target], tmp_path: Path, how: str
) -> None:
    app = start(target, tmp_path, "stubborn", timeout=60.0)
    app.app.wait_for(app.tool_started, timeout=30)
    app.quit(how)
    app.app.wait_for(app.tool_cancelled, timeout=QUIT_DEADLINE)  # The first quit is under way.

    app.quit(how)

    assert app.app.exit_code(AT_ONCE) is not None, "the second quit did not end chatui"
