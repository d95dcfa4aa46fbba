"""The Textual application: wiring of the session (config, store, provider) and screens."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from textual import events
from textual.app import SystemCommand
from textual.binding import Binding
from textual.driver import Driver
from textual.screen import Screen

from chatui._textual.escape import QuickEscapeApp
from chatui._textual.input import set_escape_delay
from chatui.config import Config
from chatui.providers.base import Provider
from chatui.screens.approval import ApprovalDialog
from chatui.screens.chat import ChatScreen
from chatui.session import Session
from chatui.store import Store
from chatui.tools import build_registry
from chatui.turn import ToolRunner, TurnOutcome

SWITCH_INTERVAL = 0.001  # Seconds; Python's default is 0.005.
QUIT_GRACE = 5.0  # Seconds quitting waits for the turn to store and the provider to close.


class ChatApp(QuickEscapeApp[None]):
    """chatui's app. Give it a provider, or the reason there is none."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "chatui"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+c", "quit", "Quit", show=False),
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
    ) -> None:
        """`tools`: what the model may call; by default the config's (`[tools]`)."""
        super().__init__()
        self.session = Session(
            config,
            store,
            provider,
            provider_error=provider_error,
            clock=clock,
            tools=build_registry(config.tools) if tools == "config" else tools,
            on_notice=self.show_notice,
        )
        set_escape_delay(config.escape_delay_ms)
        # The terminal's input thread (a key) and Textual's writer thread (a frame)
        # wait for the interpreter lock while the UI thread renders; at the default
        # 5 ms interval each wait cost up to 5 ms of a stop's way to the screen.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._quit_task: asyncio.Task[None] | None = None

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver for this platform; on Linux and macOS, one whose lone Esc is quick."""
        driver_class = super().get_driver_class()
        if driver_class.__name__ != "LinuxDriver":
            return driver_class  # Windows, or a driver named by TEXTUAL_DRIVER.
        from chatui._textual.terminal_driver import TerminalDriver  # Needs termios.

        return TerminalDriver

    def take_escape(self, key: events.Key) -> bool:
        """Stop the running turn for an Esc, if the chat screen acts on one now."""
        stack = self.screen_stack
        top = stack[-1] if stack else None
        return isinstance(top, ChatScreen | ApprovalDialog) and top.stop_for_escape(key.time)

    @property
    def last_outcome(self) -> TurnOutcome | None:
        """How the last turn ended, once it is on screen."""
        return self.session.last_outcome

    @property
    def chat(self) -> ChatScreen:
        screen = self.get_screen("chat")
        assert isinstance(screen, ChatScreen)
        return screen

    async def on_mount(self) -> None:
        theme = self.session.config.theme
        try:
            self.theme = theme
        except Exception:
            self.notify(
                f"Unknown theme {theme!r}; using the default.", severity="warning", markup=False
            )
        conversation = self.session.open_startup_conversation()
        self.install_screen(ChatScreen(self.session, conversation), "chat")
        await self.push_screen("chat")
        self.run_worker(self.chat.prepare_provider(), group="prepare")
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
        except (NotImplementedError, RuntimeError):
            pass  # Not on the main thread (tests) or not supported (Windows).

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ChatScreen):
            yield SystemCommand(
                "Switch model",
                "The provider and model that answer from the next turn on (Ctrl+L)",
                screen.action_switch_model,
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
        if self.session.quitting:
            self.exit()
            return
        self.session.quitting = True
        # In a task of its own, so keys keep flowing meanwhile (a second quit among them).
        self._quit_task = asyncio.create_task(self._stop_close_and_exit())

    async def _stop_close_and_exit(self) -> None:
        try:
            async with asyncio.timeout(QUIT_GRACE):
                if self.is_screen_installed("chat"):
                    await self.chat.stop_and_wait()
                await self.session.close()
        except (Exception, TimeoutError) as error:
            self.log.error(f"quitting: {error!r}")  # Leaving anyway; nothing to show.
        finally:
            self.exit()

    async def open_conversation(self, conversation_id: str | None) -> None:
        """Switch the chat screen to a stored conversation, or to a new one for None."""
        await self.chat.open_conversation(conversation_id)
