"""The "MCP servers" list: each server's state, live; restarts; failures told once; literal text."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import OptionList

from chatui.app import ChatApp
from chatui.config import Config, McpConfig, McpServerConfig
from chatui.mcp.events import CancelSent, McpEvent, StatusChanged
from chatui.mcp.status import ServerState, ServerStatus
from chatui.messages import ToolCallPart
from chatui.providers.base import StreamEnd, ToolSpec
from chatui.screens.approval import ApprovalDialog, describe_arguments
from chatui.screens.mcp_servers import FailureNotices, McpServersScreen
from chatui.store import Store
from chatui.tools.registry import CallContext, ToolRegistry
from chatui.widgets.composer import Composer
from tests.support.app import approval_shown, make_app, screen_text, send, settled, wait_until
from tests.support.clocks import FakeClock
from tests.support.mcp import ROOT, START_DEADLINE, stdio_config
from tests.support.scripted import ScriptedProvider, tool_call, words

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


async def test_with_every_server_off_the_list_says_so_and_not_that_they_are_starting(
    store: Store,
) -> None:
    """No server is enabled: the app makes no manager, so the list must not wait for one."""
    off = [McpServerConfig(name=name, command="npx", enabled=False) for name in ("files", "notes")]
    app = app_with_servers(store, *off)
    async with app.run_test(size=SIZE) as pilot:
        palette(app)["MCP servers"]()
        await wait_until(pilot, lambda: isinstance(app.screen, McpServersScreen))
        screen = app.screen
        assert isinstance(screen, McpServersScreen)
        await pilot.pause()

        assert app.mcp is None
        assert all("off (enabled = false in the config)" in row for row in rows(screen))
        shown = screen_text(app)
        assert "starting" not in shown
        assert (
            "Every server is off: set enabled = true in its [mcp.servers.NAME] table to start it."
            in shown
        )


async def test_a_reason_of_many_lines_is_one_paragraph_in_the_list_and_the_notice(
    store: Store,
) -> None:
    """A server's error (a traceback, say) must not make its row, or the notice, screens tall."""
    reason = "It refused the handshake: Traceback (most recent call last):" + "\n  x" * 150
    failed = ServerStatus("broken", "stdio", ServerState.FAILED, reason=reason, log_path="/l")
    servers = FakeServers([failed])
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    screen = McpServersScreen(config("broken"), lambda: servers)
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        options = screen.query_one(OptionList)
        assert options.virtual_size.height <= 6  # The reason folds to a few lines, log included.
        assert "handshake: Traceback (most recent call last): x x x" in rows(screen)[0]

    told: list[str] = []
    FailureNotices(told.append)(StatusChanged(failed))
    (notice,) = told
    assert "\n" not in notice and "last): x x x" in notice


# The approval dialog of an MCP tool


async def test_the_approval_dialog_names_an_mcp_tools_server_and_its_own_name(
    store: Store, tmp_path: Path, monkeypatch
) -> None:
    """`notes__echo` could be any server's: the dialog says whose tool runs, by its own name."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    config = Config(system_prompt="", db_path=str(store.path))
    config.mcp.servers["notes"] = stdio_config("notes", "late", tmp_path / "record.jsonl")
    script = [*tool_call(0, "c1", "notes__echo", ['{"text": "hi"}']), StreamEnd("tool_calls")]
    provider = ScriptedProvider(script, words("Echoed."))
    app = ChatApp(config, store, provider, clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        registry = app.session.tools
        await wait_until(pilot, lambda: "notes__echo" in registry, START_DEADLINE)  # type: ignore[operator]
        await send(pilot, "echo hi")
        await wait_until(pilot, approval_shown(app))
        await pilot.pause()

        shown = screen_text(app)
        assert "The model wants to run notes__echo" in shown
        assert "the tool echo of the MCP server notes" in shown
        await pilot.press("y")
        await wait_until(pilot, settled(app))


async def test_a_hostile_tool_name_from_a_server_is_shown_literally_and_short(
    store: Store,
) -> None:
    """The server's own name for its tool is untrusted: no markup, no control codes, not a page."""
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    hostile = "[b]rm[/b]\x1b[2J" + "x" * 5000
    call = ToolCallPart(id="c1", name="srv__rm", arguments="{}")
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(ApprovalDialog(call, lambda _: None, server="srv", tool=hostile))
        await pilot.pause()
        head = app.screen.query_one("#approval-tool")
        assert head.size.height <= 5  # The name, its origin (cut short), the gap below.
        shown = str(head.render())
        assert "the tool [b]rm[/b]␛[2Jxxx" in shown and "\x1b" not in shown
        assert "x… of the MCP server srv" in shown and len(shown) < 300
        assert "[b]rm[/b]␛[2J" in screen_text(app)  # Drawn literally.


def test_a_value_of_many_lines_cannot_pass_for_another_argument() -> None:
    """Each argument starts a line at the left; a value's own lines are indented under it."""
    arguments = '{"content": "hello\\npath: notes.txt", "path": "/home/me/.bashrc"}'
    assert describe_arguments(arguments).split("\n") == [
        "content: hello",
        "  path: notes.txt",
        "path: /home/me/.bashrc",
    ]
    # A key is shown as a key: one whose text could pass for something else is quoted.
    tricky = '{"a\\nb: c": 1, "": 2, "ok": 3}'
    assert describe_arguments(tricky).split("\n") == ['"a\\nb: c": 1', '"": 2', "ok: 3"]
    # One argument (a shell command) is shown as it is: its lines are all its own.
    assert describe_arguments('{"command": "ls\\nrm x"}') == "command: ls\nrm x"


@pytest.mark.parametrize("size", [(40, 12), (100, 30)], ids=["40x12", "100x30"])
def test_the_approval_dialog_of_an_mcp_tool(snap_compare, store: Store, size) -> None:  # type: ignore[no-untyped-def]
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    arguments = '{"path": "notes/todo.md", "content": "- milk\\npath: elsewhere.md\\n- eggs"}'
    call = ToolCallPart(id="c1", name="files__write_file", arguments=arguments)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        app.chat.set_focus(None)
        await pilot.pause()
        dialog = ApprovalDialog(call, lambda _: None, server="files", tool="write_file")
        await app.push_screen(dialog)
        await wait_until(pilot, lambda: dialog.ready())
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


class ServerTool:
    """A tool as an MCP server's looks to the approval (`McpTool`): its server, its own name."""

    needs_approval = True
    timeout = 30.0

    def __init__(self, name: str, own: str, ran: list[str]) -> None:
        self.name, self.server_name, self.tool_name, self._ran = name, "srv", own, ran
        self.spec = ToolSpec(name, "Remove.", {"type": "object", "properties": {}})

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments

    async def call(self, arguments: dict[str, Any], context: CallContext) -> str:
        self._ran.append(self.tool_name)
        return "removed"


async def test_a_tool_approved_for_the_conversation_is_asked_again_once_its_name_is_anothers(
    store: Store,
) -> None:
    """A new listing may give a tool's API name to another tool of the server ("rm.all" had
    `srv__rm_all` until "rm_all" came): the approval was for the tool, not for the name."""
    ran: list[str] = []
    registry = ToolRegistry([])
    registry.set_group("mcp:srv", [ServerTool("srv__rm_all", "rm.all", ran)])
    call = [*tool_call(0, "c1", "srv__rm_all", ["{}"]), StreamEnd("tool_calls")]
    again = [*tool_call(0, "c2", "srv__rm_all", ["{}"]), StreamEnd("tool_calls")]
    provider = ScriptedProvider(call, words("Done."), again, words("Done."))
    app = make_app(store, provider, clock=FakeClock(), tools=registry)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "clean up")
        await wait_until(pilot, approval_shown(app))
        await pilot.press("a")  # For this conversation.
        await wait_until(pilot, settled(app))
        assert ran == ["rm.all"]

        renamed = ServerTool("srv__rm_all_1a2b3c", "rm.all", ran)
        registry.set_group("mcp:srv", [ServerTool("srv__rm_all", "rm_all", ran), renamed])
        first = app.chat.turn
        await send(pilot, "clean up again")
        await wait_until(pilot, lambda: app.chat.turn is not first)
        await wait_until(pilot, lambda: approval_shown(app)() or settled(app)())
        assert approval_shown(app)(), f"ran without asking: {ran}"
        await pilot.press("n")
        await wait_until(pilot, settled(app))
        assert ran == ["rm.all"]


async def test_on_a_narrow_terminal_a_long_named_servers_state_is_still_shown(
    store: Store,
) -> None:
    """24 characters of name at 40 columns left no room beside it: the state goes under it."""
    name = "a-very-long-server-name1"
    servers = FakeServers(
        [
            ServerStatus(name, "stdio", ServerState.FAILED, reason="It exited with code 3."),
            ServerStatus("files", "stdio", ServerState.READY, 3),
        ]
    )
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    screen = McpServersScreen(config(name, "files"), lambda: servers)
    async with app.run_test(size=(40, 16)) as pilot:
        await app.push_screen(screen)
        await pilot.pause()
        shown = screen_text(app)
        assert name in shown and "failed: It exited" in shown and "ready, 3 tools" in shown

        await pilot.resize_terminal(100, 30)  # Wide again: name, transport and state side by side.
        await pilot.pause()
        assert "ready, 3 tools" in screen_text(app)
        assert screen.query_one(OptionList).virtual_size.height == 2


def test_the_list_on_a_narrow_terminal(snap_compare, store: Store) -> None:
    name = "a-very-long-server-name1"
    servers = FakeServers(
        [
            ServerStatus(name, "stdio", ServerState.FAILED, reason=HOSTILE, log_path="/logs/a.log"),
            ServerStatus("files", "stdio", ServerState.READY, 3, log_path="/logs/files.log"),
        ]
    )
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    screen = McpServersScreen(config(name, "files"), lambda: servers)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await shown(pilot, app, screen)

    assert snap_compare(app, terminal_size=(40, 16), run_before=run_before)
