"""The "MCP servers" list: each server's state, live; restarts; failures told once; literal text."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from textual.widgets import OptionList

from chatui.app import ChatApp
from chatui.config import Config, McpConfig, McpServerConfig
from chatui.mcp.events import CancelSent, McpEvent, StatusChanged
from chatui.mcp.status import ServerState, ServerStatus
from chatui.screens.mcp_servers import FailureNotices, McpServersScreen
from chatui.store import Store
from chatui.widgets.composer import Composer
from tests.support.app import make_app, screen_text, wait_until
from tests.support.clocks import FakeClock
from tests.support.mcp import ROOT
from tests.support.scripted import ScriptedProvider

SIZE = (100, 30)
HOSTILE = "exited: [bold red]boom[/] \x1b[2J\x1b]52;c;ZXZpbA==\x07 [link=https://x]y[/link]"


class FakeServers:
    """What the list needs of the manager: statuses, restart, subscribe; the test drives it."""

    def __init__(self, statuses: list[ServerStatus]) -> None:
        self.current = {status.name: status for status in statuses}
        self.restarted: list[str] = []
        self.listeners: list[Callable[[McpEvent], None]] = []

    def statuses(self) -> list[ServerStatus]:
        return list(self.current.values())

    def restart(self, name: str) -> None:
        self.restarted.append(name)

    def subscribe(self, listener: Callable[[McpEvent], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def tell(self, status: ServerStatus) -> None:
        self.current[status.name] = status
        for listener in list(self.listeners):
            listener(StatusChanged(status))


def config(*names: str, disabled: tuple[str, ...] = ()) -> McpConfig:
    return McpConfig(
        {
            name: McpServerConfig(
                name=name,
                command="" if name == "remote" else "npx",
                url="https://example.org/mcp" if name == "remote" else "",
                enabled=name not in disabled,
            )
            for name in names
        }
    )


STATUSES = [
    ServerStatus("files", "stdio", ServerState.READY, 14, log_path="/home/me/.local/state/x.log"),
    ServerStatus("remote", "http", ServerState.STARTING, log_path="/logs/remote.log"),
    ServerStatus("broken", "stdio", ServerState.FAILED, reason=HOSTILE, log_path="/logs/b.log"),
    ServerStatus("off", "stdio", ServerState.STOPPED, log_path="/logs/off.log"),
]
NAMES = ("files", "remote", "broken", "off")


def app_with_list(store: Store, servers: FakeServers | None):  # type: ignore[no-untyped-def]
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    holder: dict[str, FakeServers | None] = {"manager": servers}
    screen = McpServersScreen(config(*NAMES, disabled=("off",)), lambda: holder["manager"])
    return app, screen, holder


async def shown(pilot, app: ChatApp, screen: McpServersScreen) -> None:  # type: ignore[no-untyped-def]
    """The list on top, over a chat screen drawn without the composer's cursor (steady frames).

    Whether the screen below was drawn again after the composer lost the
    focus to the list would depend on timing: it loses it before.
    """
    composer = app.chat.query_one(Composer)
    app.chat.set_focus(None)
    await wait_until(pilot, lambda: not composer.has_focus)
    await pilot.pause()
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.query_one(OptionList).has_focus)
    await pilot.pause()


def rows(screen: McpServersScreen) -> list[str]:
    """Each row's text, its runs of spaces made one."""
    options = screen.query_one(OptionList)
    console = Console(width=250, file=io.StringIO(), color_system=None)
    shown = []
    for index in range(options.option_count):
        with console.capture() as capture:
            console.print(options.get_option_at_index(index).prompt)
        shown.append(" ".join(capture.get().split()))
    return shown


async def test_the_list_shows_each_servers_state_its_tools_its_reason_and_its_log(
    store: Store,
) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()

        files, remote, broken, off = rows(screen)
        assert "files" in files and "stdio" in files and "ready, 14 tools" in files
        assert "/home/me/.local/state/x.log" in files
        assert "remote" in remote and "http" in remote and "starting" in remote
        assert "failed: exited:" in broken and "log: /logs/b.log" in broken
        assert "off (enabled = false in the config)" in off


async def test_a_failure_reason_is_shown_literally(store: Store) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)
    async with app.run_test(size=(140, 30)) as pilot:
        await app.push_screen(screen)
        await pilot.pause()

        shown = screen_text(app)
        assert "[bold red]boom[/] ␛[2J␛]52;c;ZXZpbA==␇ [link=https://x]y[/link]" in shown
        assert "\x1b" not in rows(screen)[2]


async def test_selecting_a_failed_server_restarts_it_and_its_row_follows(store: Store) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        screen.query_one(OptionList).highlighted = 2
        await pilot.press("enter")
        assert servers.restarted == ["broken"]

        servers.tell(ServerStatus("broken", "stdio", ServerState.STARTING, log_path="/logs/b.log"))
        await pilot.pause()
        assert "starting" in rows(screen)[2] and "failed" not in rows(screen)[2]
        servers.tell(ServerStatus("broken", "stdio", ServerState.READY, 1, log_path="/logs/b.log"))
        await pilot.pause()
        assert "ready, 1 tool" in rows(screen)[2] and "tools" not in rows(screen)[2]
        assert screen.query_one(OptionList).highlighted == 2  # The row updated in place.

        await pilot.press("r")  # The footer's key does the same.
        assert servers.restarted == ["broken", "broken"]


async def test_esc_closes_the_list_and_it_stops_listening(store: Store) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        assert len(servers.listeners) == 1

        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert servers.listeners == []
        assert app.chat.turn is None  # Esc closed the list; nothing else happened.


async def test_while_the_manager_is_being_made_the_list_says_the_servers_are_starting(
    store: Store,
) -> None:
    app, screen, holder = app_with_list(store, None)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        assert "The servers are starting" in screen_text(app)
        assert all("starting" in row for row in rows(screen)[:3])
        assert "off (enabled = false" in rows(screen)[3]
        await pilot.press("enter")  # Nothing to restart yet: it says so.
        assert any("still starting" in notice.message for notice in app._notifications)

        servers = FakeServers(STATUSES)
        holder["manager"] = servers
        await wait_until(pilot, lambda: len(servers.listeners) == 1)
        await pilot.pause()
        assert "ready, 14 tools" in rows(screen)[0]
        assert "The servers are starting" not in screen_text(app)


async def test_a_cancel_sent_changes_no_row(store: Store) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        before = rows(screen)
        for listener in servers.listeners:
            listener(CancelSent("c1", "files"))
        await pilot.pause()
        assert rows(screen) == before


def test_a_failing_server_is_told_once_until_it_was_ready_again() -> None:
    told: list[str] = []
    notices = FailureNotices(told.append)

    def tell(state: ServerState, reason: str = "") -> None:
        notices(StatusChanged(ServerStatus("files", "stdio", state, reason=reason, log_path="/l")))

    tell(ServerState.STARTING)
    tell(ServerState.FAILED, "exited with code 1")
    tell(ServerState.STARTING)  # Started again at its next use...
    tell(ServerState.FAILED, "exited with code 1")  # ...and failed again: not news.
    tell(ServerState.FAILED, "could not start: no such program")
    assert told == ["MCP server files failed: exited with code 1. Its log: /l"]

    tell(ServerState.READY)
    tell(ServerState.FAILED, "\x1b[31m[b]died[/b]")  # Ready in between: a new failure.
    assert len(told) == 2 and told[1].startswith("MCP server files failed: ␛[31m[b]died[/b].")
    notices(CancelSent("c1", "files"))
    assert len(told) == 2


def test_every_server_state_in_the_list(snap_compare, store: Store) -> None:
    servers = FakeServers(STATUSES)
    app, screen, _ = app_with_list(store, servers)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await shown(pilot, app, screen)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_list_while_the_servers_start(snap_compare, store: Store) -> None:
    app, screen, _ = app_with_list(store, None)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await shown(pilot, app, screen)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# With the app's own manager and a real server

FLAKY = (  # Exits with code 3 until the file named by its argument exists; then a raw server.
    "import os, runpy, sys\n"
    "if not os.path.exists(sys.argv[1]):\n"
    "    sys.exit(3)\n"
    "sys.argv = ['mcp_servers', 'late']\n"
    "runpy.run_module('tests.support.mcp_servers', run_name='__main__')\n"
)


def app_with_servers(store: Store, *servers: McpServerConfig) -> ChatApp:
    config = Config(system_prompt="", db_path=str(store.path))
    config.mcp.servers = {server.name: server for server in servers}
    return ChatApp(config, store, ScriptedProvider(), clock=FakeClock())


def palette(app: ChatApp) -> dict[str, Callable[[], object]]:
    return {command.title: command.callback for command in app.get_system_commands(app.screen)}


def state_of(app: ChatApp, name: str) -> ServerState | None:
    manager = getattr(app, "mcp", None)
    if manager is None:
        return None
    return next((s.state for s in manager.statuses() if s.name == name), None)


async def test_the_palette_offers_the_list_only_when_the_config_names_servers(
    store: Store,
) -> None:
    async with make_app(store, ScriptedProvider()).run_test(size=SIZE) as pilot:
        assert "MCP servers" not in palette(pilot.app)


async def test_a_server_that_failed_is_told_once_and_restarted_from_the_list(
    store: Store, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # Its log goes there.
    flag = tmp_path / "fixed"
    flaky = McpServerConfig(
        name="flaky", command=sys.executable, args=["-c", FLAKY, str(flag)], cwd=str(ROOT)
    )
    app = app_with_servers(store, flaky)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: state_of(app, "flaky") is ServerState.FAILED, 30)
        await wait_until(pilot, lambda: bool(notices(app)))
        (notice,) = notices(app)
        assert notice.startswith("MCP server flaky failed: It exited with code 3. Its log: ")
        assert notice.endswith("flaky.log") and str(tmp_path / "state") in notice

        palette(app)["MCP servers"]()
        await wait_until(pilot, lambda: isinstance(app.screen, McpServersScreen))
        screen = app.screen
        assert isinstance(screen, McpServersScreen)
        await pilot.pause()
        (row,) = rows(screen)
        assert "flaky stdio failed: It exited with code 3." in row and "flaky.log" in row

        flag.touch()  # Fixed: the restart brings it up.
        await pilot.press("enter")
        await wait_until(pilot, lambda: state_of(app, "flaky") is ServerState.READY, 30)
        await pilot.pause()
        (status,) = app.mcp.statuses()  # type: ignore[union-attr]
        assert status.tools > 0 and f"ready, {status.tools} tools" in rows(screen)[0]
        assert len(notices(app)) == 1  # The failure was told once.

        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.chat)


def notices(app: ChatApp) -> list[str]:
    return [notice.message for notice in app._notifications if "MCP server" in notice.message]
