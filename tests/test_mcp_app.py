"""MCP servers in the app: started after the first frame, never in a turn's way, closed on quit.

The Pilot tests run the app in this process, its servers real subprocesses
(`tests/support/mcp_servers.py`). The quit tests run chatui as the `chatui`
command does, on a pseudo-terminal (`tests/support/mcp_quit_target.py`),
and quit while an MCP call runs: the call is cancelled on the server, the
partial turn is stored, and no server process (nor its child) is left.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatui.app import ChatApp
from chatui.config import Config, McpConfig, McpServerConfig
from chatui.mcp.status import ServerState
from chatui.store import Store
from tests.support.app import send, settled, wait_until
from tests.support.mcp import Record, stdio_config, until
from tests.support.processes import OnPty, alive, group_alive, living, marker
from tests.support.scripted import ScriptedProvider, words

ROOT = Path(__file__).resolve().parent.parent
QUIT_DEADLINE = 10.0  # Seconds; a quit takes well under one here.
CTRL_Q = b"\x11"


@pytest.fixture
def record(tmp_path: Path) -> Record:
    return Record(tmp_path / "record.jsonl")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' logs go under the test's own state dir."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def mcp_app(store: Store, provider, *servers: McpServerConfig) -> ChatApp:
    config = Config(
        system_prompt="",
        db_path=str(store.path),
        mcp=McpConfig({server.name: server for server in servers}),
    )
    return ChatApp(config, store, provider)


def test_the_app_and_its_screens_load_no_mcp_sdk() -> None:
    """The SDK takes about a second to import: the first frame never waits for it."""
    check = (
        "import sys, chatui.app, chatui.screens.mcp_servers, chatui.cli\n"
        "print(sorted(n for n in sys.modules if n == 'mcp' or n.startswith(('mcp.', 'mcp_'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_a_turn_that_uses_no_mcp_tool_completes_while_a_server_is_still_starting(
    store: Store, record: Record
) -> None:
    provider = ScriptedProvider(words("Hello there."))
    app = mcp_app(store, provider, stdio_config("mute", "noinit", record.path))
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.mcp is not None)
        assert app.mcp is not None
        server = app.mcp.servers["mute"]
        await record.until(lambda: record.find("request", method="initialize"))

        await send(pilot, "hi")
        await wait_until(pilot, settled(app))

        assert app.last_outcome is not None and app.last_outcome.state == "complete"
        assert server.status.state is ServerState.STARTING
        assert [tool.name for tool in provider.last.request.tools if "mute" in tool.name] == []
        await pilot.press("ctrl+q")
    (handshake,) = record.find("request", method="initialize")
    await until(lambda: not alive(handshake["pid"]))


async def test_a_ready_servers_tools_are_offered_to_the_model(store: Store, record: Record) -> None:
    provider = ScriptedProvider(words("Hello there."))
    app = mcp_app(store, provider, stdio_config("raw", "late", record.path))
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.mcp is not None)
        assert app.mcp is not None
        server = app.mcp.servers["raw"]
        await wait_until(pilot, lambda: server.status.state is ServerState.READY)

        await send(pilot, "hi")
        await wait_until(pilot, settled(app))

        offered = {tool.name for tool in provider.last.request.tools}
        assert {"raw__echo", "raw__wait", "raw__change"} <= offered
        await pilot.press("ctrl+q")


async def test_no_manager_is_made_when_the_config_enables_no_server(
    store: Store, record: Record
) -> None:
    off = stdio_config("off", "late", record.path, enabled=False)
    app = mcp_app(store, ScriptedProvider(words("Hello.")), off)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_until(pilot, settled(app))
        assert app.mcp is None
        assert record.events() == []


# Quitting while an MCP call runs, in a real process


class Target:
    """tests/support/mcp_quit_target.py on a pseudo-terminal, with its database and record."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "chat.sqlite3"
        self.record = Record(tmp_path / "record.jsonl")
        self.marker = marker()
        self.log = tmp_path / "state" / "chatui" / "log" / "mcp" / "std.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # So that `tests.support` imports.
            "TERM": "xterm-256color",
            "TEXTUAL_ANIMATIONS": "none",
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        env.pop("TEXTUAL", None)
        argv = [sys.executable, "-m", "tests.support.mcp_quit_target", str(self.db)]
        self.app = OnPty([*argv, str(self.record.path), self.marker], env)
        self.app.wait_for(lambda: "idle" in self.app.output, timeout=60)
        self.app.wait_for(self.tools_listed, timeout=60)
        self.app.write(b"go\r")

    def tools_listed(self) -> bool:
        return self.log.exists() and "listed 6 tools" in self.log.read_text()

    def stored(self) -> list[tuple[str, str | None]]:
        """(kind, state) of each item stored so far, in order (a tool result's state too)."""
        try:
            with sqlite3.connect(self.db) as db:
                rows = db.execute("SELECT kind, state, data FROM items ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []
        return [(kind, state or json.loads(data).get("state")) for kind, state, data in rows]


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    running = Target(tmp_path)
    yield running
    running.app.close()


@pytest.mark.parametrize("how", ["ctrl+q", "sigterm"])
def test_quitting_while_an_mcp_call_runs_cancels_it_on_the_server_and_leaves_no_process(
    target: Target, how: str
) -> None:
    record = target.record
    (started,) = record.wait_for(lambda: record.find("start", tool="slow"))
    (spawned,) = record.find("start", tool="spawn_child")
    server = started["pid"]

    if how == "sigterm":
        os.kill(target.app.pid, signal.SIGTERM)
    else:
        target.app.write(CTRL_Q)

    assert target.app.exit_code(QUIT_DEADLINE) == 0, "chatui did not exit"
    assert "Traceback" not in target.app.output
    assert record.cancelled(started["rid"])  # notifications/cancelled, with the call's id.
    assert record.find("handler_cancelled", rid=started["rid"])
    assert record.find("done", tool="slow") == []
    assert target.stored() == [
        ("prompt", None),
        ("response", "complete"),
        ("tool_result", "ok"),
        ("response", "complete"),
        ("tool_result", "cancelled"),
    ]
    record.wait_for(lambda: not living(target.marker) and not group_alive(server))
    assert not alive(spawned["child"])


def test_quitting_twice_kills_the_servers_at_once(target: Target) -> None:
    record = target.record
    (started,) = record.wait_for(lambda: record.find("start", tool="slow"))
    server = started["pid"]

    target.app.write(CTRL_Q + CTRL_Q)

    assert target.app.exit_code(QUIT_DEADLINE) is not None, "chatui did not exit"
    record.wait_for(lambda: not living(target.marker) and not group_alive(server))
