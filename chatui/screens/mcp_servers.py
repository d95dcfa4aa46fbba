"""The "MCP servers" palette entry: each server's state and log, a restart; failures told once.

The list shows every server the config names: its transport, its state
(starting, ready with its tools, failed with the reason, stopped), and where
its log is. Enter (or a click) on a server restarts it. It follows the
servers live through the manager's events, and while the manager does not
exist yet (it is made after the first frame, off the event loop, because the
`mcp` SDK is slow to import) it says they are starting and waits for it.

`FailureNotices` tells the user with a notification when a server fails to
start or dies: once per failure, not once per retry (a broken server is
started again on each use), and again only after it was ready in between.

Nothing here imports the SDK: the manager is seen through `ServerSource`.
A failure's reason and a log's path come from outside (a server's message,
the file system): shown literally, never as markup or control sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from chatui._textual.footer import KeyFooter
from chatui.config import McpConfig
from chatui.mcp.events import McpEvent, StatusChanged
from chatui.mcp.status import ServerState, ServerStatus
from chatui.sanitize import one_line, visible

REASON_CHARS = 500  # Of a failure's reason, at most this much is shown.
STATE_ROOM = 20  # Cells the state needs beside the name; with fewer, it goes under it.
WAIT_FOR_MANAGER = 0.1  # Seconds between looks for the manager, while it is being made.


class ServerSource(Protocol):
    """What the list needs of the MCP manager (`chatui.mcp.manager.McpManager`)."""

    def statuses(self) -> list[ServerStatus]: ...

    def restart(self, name: str) -> None: ...

    def subscribe(self, listener: Callable[[McpEvent], None]) -> Callable[[], None]: ...


def mcp_commands(app: App[Any], config: McpConfig) -> Iterator[SystemCommand]:
    """The palette's "MCP servers" entry, offered when the config names servers."""
    if config.servers:

        def show() -> None:
            app.push_screen(McpServersScreen(config, lambda: getattr(app, "mcp", None)))

        yield SystemCommand(
            "MCP servers", "Each MCP server's state and log; restart one (Enter)", show
        )


class McpServersScreen(ModalScreen[None]):
    """The configured MCP servers, live; Enter restarts the highlighted one, Esc closes."""

    DEFAULT_CSS = """
    McpServersScreen {
        align: center middle;
    }
    #mcp-dialog {
        width: 90%;
        max-width: 100;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #mcp-note {
        color: $text-muted;
        height: auto;
    }
    #mcp-options {
        height: auto;
        max-height: 30;
        border: none;
        padding: 0;
    }
    """

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("r", "restart", "Restart"),  # Enter too (the list's own key: selected).
    ]

    def __init__(self, config: McpConfig, manager: Callable[[], ServerSource | None]) -> None:
        """`manager()` is the app's MCP manager, or None while it is being made."""
        super().__init__()
        self._config = config
        self._manager = manager
        self._source: ServerSource | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._waiting: Timer | None = None
        self.statuses: dict[str, ServerStatus] = {}  # What each row shows, by server name.

    def compose(self) -> ComposeResult:
        with Vertical(id="mcp-dialog") as dialog:
            dialog.border_title = "MCP servers"
            yield Static(id="mcp-note")
            yield OptionList(id="mcp-options")
        yield KeyFooter()

    def on_mount(self) -> None:
        if not self._connect():
            starting = ServerState.STARTING
            self._show_all(
                [
                    ServerStatus(name, server.transport, starting if server.enabled else _OFF)
                    for name, server in self._config.servers.items()
                ]
            )
            if any(server.enabled for server in self._config.servers.values()):
                self._note("The servers are starting…")
                self._waiting = self.set_interval(WAIT_FOR_MANAGER, self._connect)
            else:  # The app makes no manager then: there is nothing to wait for.
                self._note(
                    "Every server is off: set enabled = true in its [mcp.servers.NAME] table "
                    "to start it."
                )
        self.query_one(OptionList).focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _connect(self) -> bool:
        """Follow the manager once it exists; False while it does not yet."""
        if self._source is not None:
            return True
        source = self._manager()
        if source is None:
            return False
        if self._waiting is not None:
            self._waiting.stop()
            self._waiting = None
        self._source = source
        self._unsubscribe = source.subscribe(self._on_event)
        self._show_all(source.statuses())
        self._note("Enter restarts the highlighted server. Esc closes this list.")
        return True

    def _on_event(self, event: McpEvent) -> None:
        """A manager event: a server's new status redraws its row (a cancel sent is not ours)."""
        if isinstance(event, StatusChanged) and self.is_attached:
            self._show(event.status)

    def _note(self, text: str) -> None:
        self.query_one("#mcp-note", Static).update(Text(text))

    def _show_all(self, statuses: list[ServerStatus]) -> None:
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        self.statuses = {}
        for status in statuses:
            self.statuses[status.name] = status
            options.add_option(Option(self._describe(status), id=status.name))
        if statuses:
            options.highlighted = min(highlighted or 0, len(statuses) - 1)

    def _show(self, status: ServerStatus) -> None:
        options = self.query_one(OptionList)
        if status.name not in self.statuses:
            self.statuses[status.name] = status
            options.add_option(Option(self._describe(status), id=status.name))
            return
        self.statuses[status.name] = status
        options.replace_option_prompt(status.name, self._describe(status))

    def _describe(self, status: ServerStatus) -> Table:
        server = self._config.servers.get(status.name)
        width = max(map(len, self._config.servers), default=0)
        stacked = self._room() < width + STATE_ROOM + 9  # 9: the transport and the gaps.
        return describe(
            status, enabled=server is None or server.enabled, width=width, stacked=stacked
        )

    def _room(self) -> int:
        """Cells a row has: the list's width once laid out, else as the dialog's CSS makes it."""
        laid_out = self.query_one(OptionList).scrollable_content_region.width
        return laid_out or min(self.size.width * 9 // 10, 100) - 4

    def on_resize(self, event: events.Resize) -> None:
        """Rows are laid out for the width (side by side, or the state under the name)."""
        self.call_after_refresh(self._describe_again)

    def _describe_again(self) -> None:
        options = self.query_one(OptionList)
        for name, status in self.statuses.items():
            options.replace_option_prompt(name, self._describe(status))

    def action_restart(self) -> None:
        """Restart the highlighted server (its new state shows as it comes)."""
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        name = options.get_option_at_index(options.highlighted).id
        if name is not None:
            self.restart(name)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.restart(event.option.id)

    def restart(self, name: str) -> None:
        server = self._config.servers.get(name)
        if server is not None and not server.enabled:
            self.notify(
                f"{visible(name)} is off: set enabled = true in its [mcp.servers.{visible(name)}] "
                "table to start it.",
                markup=False,
            )
            return
        if self._source is None:
            self.notify("The servers are still starting; try again in a moment.", markup=False)
            return
        self._source.restart(name)


_OFF = ServerState.STOPPED


def describe(
    status: ServerStatus, *, enabled: bool = True, width: int = 0, stacked: bool = False
) -> Table:
    """A server's row: name (in `width` cells), transport, state and why it failed; its log.

    `stacked` (a narrow terminal): the state and the log go under the name.
    """
    state = Text()
    match status.state:
        case ServerState.READY:
            tools = f"{status.tools} tool{'' if status.tools == 1 else 's'}"
            state.append(f"ready, {tools}", style="green")
        case ServerState.STARTING:
            state.append("starting…", style="yellow")
        case ServerState.FAILED:
            state.append("failed", style="bold red")
            reason = one_paragraph(status.reason)
            if reason:
                state.append(f": {reason}")
        case _ if not enabled:
            state.append("off (enabled = false in the config)", style="dim")
        case _:
            state.append("stopped", style="dim")
    if status.log_path:
        state.append(f"\nlog: {visible(status.log_path)}", style="dim")
    name = Text(visible(status.name), style="bold")
    if stacked:
        row = Table.grid()
        row.add_column(overflow="fold")
        row.add_row(Text.assemble(name, "  ", Text(status.transport, style="dim")))
        row.add_row(Padding(state, (0, 0, 0, 2)))
        return row
    row = Table.grid(padding=(0, 2))
    row.add_column(width=max(width, len(name)), no_wrap=True)
    row.add_column(width=5, no_wrap=True)
    row.add_column(ratio=1, overflow="fold")  # A long path is folded, never cut.
    row.add_row(name, Text(status.transport, style="dim"), state)
    return row


class FailureNotices:
    """A manager listener that notifies the user of a server that failed, once per failure.

    A failed server is started again at its next use, and may fail again in
    the same way each time: only the first failure is told, until the
    server is ready again (then its next failure is news).
    """

    def __init__(self, notify: Callable[[str], None]) -> None:
        """`notify(text)` shows a warning; `text` is already literal, never markup."""
        self._notify = notify
        self._told: set[str] = set()  # Servers whose failure was told, and not ready since.

    def __call__(self, event: McpEvent) -> None:
        if not isinstance(event, StatusChanged):
            return
        status = event.status
        name = status.name
        if status.state is ServerState.READY:
            self._told.discard(name)
        elif status.state is ServerState.FAILED and name not in self._told:
            self._told.add(name)
            self._notify(failure_notice(status))


def one_paragraph(reason: str) -> str:
    """A failure's reason as shown: cut, literal, its lines and runs of spaces made one space.

    A server's own error (a traceback, say) may be of many lines: the whole of
    it is in the log, and a row or a notice must not grow screens tall.
    """
    return one_line(reason, REASON_CHARS)


def failure_notice(status: ServerStatus) -> str:
    """What the notification says of a failed server: what happened, and where to look."""
    reason = one_paragraph(status.reason) or "It stopped."
    if not reason.endswith((".", "!", "?", "…")):
        reason += "."
    text = f"MCP server {visible(status.name)} failed: {reason}"
    if status.log_path:
        text += f" Its log: {visible(status.log_path)}"
    return text


def watch_servers(app: App[Any], manager: ServerSource) -> Callable[[], None]:
    """Notify `app`'s user of each server failure from now on; returns the unsubscribe."""

    def notify(text: str) -> None:
        app.notify(text, severity="warning", markup=False, timeout=10)

    return manager.subscribe(FailureNotices(notify))
