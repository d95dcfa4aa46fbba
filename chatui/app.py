"""The Textual application: wiring of the session (config, store, provider) and screens.

Ctrl+C copies what is selected; else it stops a reply the way Esc does; else
it says how to quit, and a second Ctrl+C within `CTRL_C_AGAIN` seconds quits
(a Ctrl+C that stopped a reply in between starts the count afresh).
Quitting (Ctrl+Q, Ctrl+C twice, SIGTERM) stores the composer's draft (or,
if the store cannot keep it, prints it once the terminal is given back),
stops the running turn the way Esc does and stores it (a running MCP call is
cancelled on its server), closes the provider and the MCP servers, then
exits; it never hangs, whatever a tool or a server does. The stop and the
close get `QUIT_GRACE` seconds; a second quit exits at once, killing every
MCP server's process group. Threads the loop starts for `asyncio.to_thread`
are daemon threads that nothing waits for (`threads.DaemonThreadExecutor`),
and with an `ExitDeadline` (the `chatui` command gives one) the process ends
itself if exiting still hangs (a task that swallows its cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from rich.console import RenderableType
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import SystemCommand
from textual.binding import Binding
from textual.driver import Driver
from textual.screen import Screen

from chatui._textual.escape import QuickEscapeApp
from chatui._textual.input import set_escape_delay
from chatui.config import Config
from chatui.gc_pause import resume_after_startup
from chatui.providers.lifecycle import Provider
from chatui.sanitize import visible
from chatui.screens.chat import ChatScreen
from chatui.screens.turn_choices import turn_commands
from chatui.session import Session
from chatui.store import Store
from chatui.threads import DaemonThreadExecutor, ExitDeadline

if TYPE_CHECKING:
    from chatui.mcp.manager import McpManager  # The `mcp` SDK: imported after the first frame.
    from chatui.tools.protocol import ToolRunner
    from chatui.turn import TurnOutcome

SWITCH_INTERVAL = 0.001  # Seconds; Python's default is 0.005.
QUIT_GRACE = 5.0  # Seconds quitting waits for the turn to store and the provider to close.
MCP_CLOSE_GRACE = 2.0  # Seconds of QUIT_GRACE the MCP servers get to close; then killed.
EXIT_GRACE = 2.0  # Seconds the app may then take to exit, past which an ExitDeadline ends it.
CTRL_C_AGAIN = 2.0  # Seconds (the event loop's clock) in which a second Ctrl+C quits.
QUIT_HINT = "Press Ctrl+C again to quit, or Ctrl+Q."
PICKED_THEME = "theme"  # Setting: the theme last picked in the command palette.
PICKED_OVER = "theme.config"  # Setting: the config's theme when it was picked.


class ChatApp(QuickEscapeApp[None]):
    """chatui's app. Give it a provider, or the reason there is none."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "chatui"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Priority, so it also acts in dialogs (their bindings end at the dialog); with
        # text selected it steps aside for the copy. A Ctrl+C from the terminal that
        # can stop a reply never gets here: `take_escape` takes it as it arrives.
        Binding("ctrl+c", "ctrl_c", "Stop, or quit", show=False, priority=True),
    ]

    def __init__(
        self,
        config: Config,
        store: Store,
        provider: Provider | None,
        *,
        provider_error: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tools: ToolRunner | Literal["config"] | None = "config",
        exit_deadline: ExitDeadline | None = None,
        deferred: bool = False,
        resume: str | None = None,
        model_named: bool = False,
    ) -> None:
        """`tools`: what the model may call; by default the config's (`[tools]`).

        `resume`: the id of a stored conversation, owned by this chatui's store,
        to open at startup (`--continue`, `--resume`) instead of the usual one.

        `deferred`: with no `provider`, the configured one is made after the
        first frame, on a thread (see `Session`). `model_named`: the user named
        the model on the command line: it answers the conversation opened first
        and becomes its own, rather than the model that conversation kept.

        `exit_deadline`: armed when quitting begins, so that the process ends
        even if exiting hangs; only for a process that runs nothing but chatui.
        """
        super().__init__()
        self.session = Session(
            config,
            store,
            provider,
            provider_error=provider_error,
            clock=clock,
            tools=None if tools == "config" else tools,
            make_tools=partial(_config_tools, config) if tools == "config" else None,
            on_notice=self.show_notice,
            deferred=deferred,
        )
        set_escape_delay(config.escape_delay_ms)
        # The terminal's input thread (a key) and Textual's writer thread (a frame)
        # wait for the interpreter lock while the UI thread renders; at the default
        # 5 ms interval each wait cost up to 5 ms of a stop's way to the screen.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._quit_task: asyncio.Task[None] | None = None
        self._exit_deadline = exit_deadline
        self._signal_loop: asyncio.AbstractEventLoop | None = None  # Where SIGTERM's quit runs.
        self._sigterm_before: Any = None  # The SIGTERM handler to put back on unmount.
        self._terminated = False  # A SIGTERM came.
        self.terminal_released = False  # Unmounted: Textual has given the terminal back.
        self._ctrl_c_at = -math.inf  # When a Ctrl+C last said how to quit (the loop's clock).
        self._theme_applied = False  # The startup theme is set: a change now is the user's.
        self.mcp: McpManager | None = None  # The MCP servers, once started after the first frame.
        self._resume = resume
        self._model_named = model_named

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver for this platform; on Linux and macOS, one whose lone Esc is quick."""
        driver_class = super().get_driver_class()
        if driver_class.__name__ != "LinuxDriver":
            return driver_class  # Windows, or a driver named by TEXTUAL_DRIVER.
        from chatui._textual.terminal_driver import TerminalDriver  # Needs termios.

        return TerminalDriver

    def take_escape(self, key: events.Key) -> bool:
        """Stop the running turn for an Esc or a Ctrl+C, if the screen on top acts on one now.

        Ctrl+C takes the same path as Esc, so its "stopped in" counts from its
        byte too; but with text selected it is left to copy it.
        """
        stack = self.screen_stack
        top = stack[-1] if stack else None
        if key.key != "ctrl+c":
            return (stop := _escape_stopper(top)) is not None and stop(key.time)
        if top is None or _has_selection(top):
            return False
        if isinstance(top, ChatScreen):
            stopped = top.stop_for_ctrl_c(key.time)
        else:  # The approval dialog: Ctrl+C stops the turn as Esc does.
            stopped = (stop := _escape_stopper(top)) is not None and stop(key.time)
        if stopped:
            self._ctrl_c_at = -math.inf  # A stop, not the first press of a quit.
        return stopped

    async def on_event(self, event: events.Event) -> None:
        """A key or a paste as it reaches the app: text typed while the message list has the focus.

        Before Textual hands it to the focused widget: the composer takes the
        focus here, in the app's queue, so this key and every one read with
        it reach the composer, in order. A key's bindings run in here (the
        priority ones first, the others once it has bubbled back): meanwhile
        the chat screen knows when it was read (`ChatScreen.key_time`), so an
        Esc read with a key that starts a turn stops that turn.
        """
        stack = self.screen_stack
        chat = stack[-1] if stack and isinstance(stack[-1], ChatScreen) else None
        if chat is None or not isinstance(event, events.Key | events.Paste):
            await super().on_event(event)
            return
        if not event.is_forwarded:
            chat.claim_typed_key(event)
        chat.key_time = event.time if isinstance(event, events.Key) else None
        try:
            await super().on_event(event)
        finally:
            chat.key_time = None

    async def action_ctrl_c(self) -> None:
        """Ctrl+C: copy what is selected; else stop the reply; else say how to quit, or quit.

        The stop is here for a Ctrl+C that came another way than from the
        terminal (`take_escape` takes those), or while another screen is on
        top (the conversation list). Never quits on a single press.
        """
        if _has_selection(self.screen):
            raise SkipAction()  # The focused widget or the screen copies it.
        if self.session.quitting:
            await self.action_quit()  # Already quitting: now at once.
            return
        if self.is_screen_installed("chat") and self.chat.stop_for_ctrl_c(None):
            self._ctrl_c_at = -math.inf  # A stop, not the first press of a quit.
            return
        now = asyncio.get_running_loop().time()
        if now - self._ctrl_c_at <= CTRL_C_AGAIN:
            self._ctrl_c_at = -math.inf
            await self.action_quit()
            return
        self._ctrl_c_at = now
        self.notify(QUIT_HINT, timeout=CTRL_C_AGAIN, markup=False)

    @property
    def last_outcome(self) -> TurnOutcome | None:
        """How the last turn ended, once it is on screen."""
        return self.session.last_outcome

    @property
    def chat(self) -> ChatScreen:
        screen = self.get_screen("chat")
        assert isinstance(screen, ChatScreen)
        return screen

    def get_default_screen(self) -> Screen[Any]:
        """The chat screen, with the conversation to open first: the app's first and only base.

        Composed as Textual composes a default screen, inside the app's start-up
        batch: its first frame is drawn whole once that batch ends (a screen
        pushed from `on_mount` was laid out inside the batch, and that frame was
        dropped, leaving the composer and the status line to a later one).
        """
        # Whatever is left blocked in `asyncio.to_thread` (a tool's call, the model's
        # assembly) is never waited for on exit.
        asyncio.get_running_loop().set_default_executor(DaemonThreadExecutor())
        self._apply_startup_theme()  # Before anything is styled: styled once.
        conversation = (
            self.session.open_startup_conversation()
            if self._resume is None
            else self.session.store.load_conversation(self._resume)
        )
        # Its own model answers it (made after the first frame when deferred), unless the
        # command line named one.
        self.session.adopt_conversation_settings(conversation, model_named=self._model_named)
        screen = ChatScreen(self.session, conversation)
        self.install_screen(screen, "chat")
        return screen

    async def on_mount(self) -> None:
        self._signal_loop = asyncio.get_running_loop()
        # Textual holds every frame back until this returns: the first frame shows the
        # conversation (or the welcome) with the composer, as one.
        await self.chat.shown.wait()
        # After the first frame: making the provider imports its SDK (or llama.cpp) on a
        # thread, and loading a model or an MCP library competes with the frame for the GIL.
        self.call_after_refresh(resume_after_startup)  # See `chatui.cli.run_app`.
        self.call_after_refresh(self._start_provider)
        if any(server.enabled for server in self.session.config.mcp.servers.values()):
            self.call_after_refresh(self._start_mcp)
        if threading.current_thread() is threading.main_thread():
            # A plain handler, not the loop's: it runs even while the loop is stuck.
            self._sigterm_before = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _start_provider(self) -> None:
        self.run_worker(self.chat.prepare_provider(), group="prepare")

    def _start_mcp(self) -> None:
        self.run_worker(self._make_mcp(), group="mcp", exit_on_error=False)

    async def _make_mcp(self) -> None:
        """The MCP manager, its servers starting in the background (after the first frame).

        The `mcp` SDK takes about a second to import: it is imported on a
        thread, so that neither the screen nor a turn that uses no MCP tool
        waits for it. The servers' tools join the session's registry.
        """
        from chatui.tools.registry import ToolRegistry

        registry, config = self.session.tools, self.session.config
        if not isinstance(registry, ToolRegistry):
            return  # Tools given in code (a test's): no place for the servers' tools.
        try:
            manager = await asyncio.to_thread(importlib.import_module, "chatui.mcp.manager")
        except Exception as error:
            self.notify(
                f"The MCP servers could not be started: chatui could not load the MCP "
                f"library ({type(error).__name__}). Reinstall chatui to get it.",
                severity="error",
                markup=False,
            )
            return
        if self.session.quitting:
            return
        self.mcp = manager.McpManager(
            config.mcp,
            registry,
            secrets=config.secrets(),
            output_limit=config.tools.output_limit,
        )
        from chatui.screens.mcp_servers import watch_servers

        watch_servers(self, self.mcp)  # A server that fails to start or dies is told, once.
        self.mcp.start()

    def _apply_startup_theme(self) -> None:
        """The theme last picked in the palette, unless the config's changed since it was picked.

        Whichever the user chose last wins: a pick over the config's theme it
        replaced, a later edit of the config over the pick. A picked theme
        that no longer exists gives way to the config's without a word.
        """
        theme = configured = self.session.config.theme
        store = self.session.store
        with contextlib.suppress(sqlite3.Error):  # An unreadable setting is no setting.
            picked = store.get_setting(PICKED_THEME)
            if picked in self.available_themes and store.get_setting(PICKED_OVER) == configured:
                theme = picked
        try:
            self.theme = theme
        except Exception:
            self.notify(
                f"Unknown theme {theme!r}; using the default.",
                severity="warning",
                markup=False,
            )
        self._theme_applied = True

    def watch_theme(self, theme: str) -> None:
        """Remember a theme set once the app is up (the palette's): it is the next start's."""
        if not self._theme_applied:
            return
        store = self.session.store
        try:
            store.set_setting(PICKED_THEME, theme)
            store.set_setting(PICKED_OVER, self.session.config.theme)
        except sqlite3.Error as error:
            self.notify(
                f"The theme could not be saved for the next start: {error}",
                severity="warning",
                markup=False,
            )

    def on_unmount(self) -> None:
        self.terminal_released = True
        kill_mcp_servers()  # Whatever way the app ended, no MCP server outlives it.
        if self._sigterm_before is not None:
            signal.signal(signal.SIGTERM, self._sigterm_before)
            self._sigterm_before = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM: quit as Ctrl+Q does; a second one, as Ctrl+Q pressed again.

        It runs between two bytecodes of the main thread, wherever that is:
        it only arms the deadline and hands the quit to the loop.
        """
        again, self._terminated = self._terminated, True
        self._arm_exit_deadline(again)
        if again:
            kill_mcp_servers()  # The loop may be stuck: kill them here and now.
        with contextlib.suppress(RuntimeError):  # The loop is closed.
            if self._signal_loop is not None:
                self._signal_loop.call_soon_threadsafe(self.call_later, self.action_quit)
                return
        # The app no longer runs: end as if this handler had never been installed.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def _arm_exit_deadline(self, again: bool) -> None:
        """Give the process its time to end: the stop and the exit, or (again) the exit."""
        if self._exit_deadline is not None:
            self._exit_deadline.set(EXIT_GRACE if again else QUIT_GRACE + EXIT_GRACE)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ChatScreen):
            # Imported when the palette first opens: the first frame does without them.
            from chatui.screens.export_action import export_commands
            from chatui.screens.mcp_servers import mcp_commands

            yield SystemCommand(
                "Switch model",
                "The provider and model that answer from the next turn on (Ctrl+L)",
                screen.action_switch_model,
            )
            yield SystemCommand(
                "System prompt for this conversation",
                "Give this conversation its own system prompt, or go back to the default",
                screen.action_system_prompt,
            )
            yield from turn_commands(screen)
            yield from export_commands(screen)
            yield from mcp_commands(self, self.session.config.mcp)
            if screen.check_action("send_queued", ()) is True:  # Offered while it would act.
                yield SystemCommand(
                    "Send the queued message now",
                    "Send the first message queued while a reply streamed (Ctrl+S)",
                    screen.action_send_queued,
                )

    def show_notice(self, text: str) -> None:
        """A warning from the provider (untrusted text, shown literally)."""
        self.notify(text, severity="warning", markup=False, timeout=8)

    async def action_quit(self) -> None:
        """Quit: stop the running turn the same way Esc does, store it, then exit.

        A stop or a provider close that does not finish within `QUIT_GRACE`
        seconds is left behind, and a second quit exits at once: quitting
        never hangs and never ends in a traceback.
        """
        self._arm_exit_deadline(again=self.session.quitting)
        if self.is_screen_installed("chat"):
            self.chat.drafts.save()  # First: however the rest goes, the draft is kept.
        if self.session.quitting:
            kill_mcp_servers()  # A second quit waits for nothing.
            self.exit()
            return
        self.session.quitting = True
        # In a task of its own, so keys keep flowing meanwhile (a second quit among them).
        self._quit_task = asyncio.create_task(self._stop_close_and_exit())

    def exit(
        self, result: None = None, return_code: int = 0, message: RenderableType | None = None
    ) -> None:
        """Exit; a draft the store could not keep is printed once the terminal is given back."""
        if message is None and self.is_screen_installed("chat"):
            screen = self.chat
            if (draft := screen.drafts.unsaved) is not None:
                message = Text(
                    f"chatui could not store your draft ({screen.drafts.error}). "
                    f"Here it is, to keep:\n\n{visible(draft)}"
                )
        super().exit(result, return_code, message)

    async def _stop_close_and_exit(self) -> None:
        try:
            async with asyncio.timeout(QUIT_GRACE):
                if self.is_screen_installed("chat"):
                    await self.chat.stop_and_wait()  # A running MCP call is cancelled first.
                await asyncio.gather(self._close_mcp(), self.session.close())
        except (Exception, TimeoutError) as error:
            self.log.error(f"quitting: {error!r}")  # Leaving anyway; nothing to show.
        finally:
            kill_mcp_servers()
            self.exit()

    async def _close_mcp(self) -> None:
        if self.mcp is not None:
            await self.mcp.close(MCP_CLOSE_GRACE)

    async def open_conversation(self, conversation_id: str | None) -> None:
        """Switch the chat screen to a stored conversation, or to a new one for None."""
        await self.chat.open_conversation(conversation_id)


def _config_tools(config: Config) -> ToolRunner:
    """The tools the config enables: made once asked for (after the first frame)."""
    from chatui.tools.builtin import build_registry

    return build_registry(config.tools)


def kill_mcp_servers() -> None:
    """SIGKILL every MCP server's process group, at once, if any was started.

    Synchronous, and imports nothing: a signal handler or an exit deadline
    may call it.
    """
    stdio = sys.modules.get("chatui.mcp.stdio")
    if stdio is not None:
        stdio.kill_now()


def _escape_stopper(screen: object) -> Callable[[float], bool] | None:
    """How `screen` stops the turn for Esc, if it does (the chat screen, the approval dialog).

    Found by its name, not by the dialog's class (the first frame does without the
    dialog's module), and cheaply: this runs as each Esc arrives.
    """
    stop = getattr(screen, "stop_for_escape", None)
    return stop if callable(stop) else None


def _has_selection(screen: Screen[Any]) -> bool:
    """Whether Ctrl+C has something to copy: text selected on `screen`, or in its focused input."""
    if screen.get_selected_text():
        return True
    return bool(getattr(screen.focused, "selected_text", ""))
