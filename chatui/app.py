"""The Textual application: wiring of the session (config, store, provider) and screens.

Quitting (Ctrl+Q, Ctrl+C, SIGTERM) stops the running turn the way Esc does
and stores it, closes the provider, then exits; it never hangs, whatever a
tool or a server does. The stop and the close get `QUIT_GRACE` seconds; a
second quit exits at once. Threads the loop starts for `asyncio.to_thread`
are daemon threads that nothing waits for (`threads.DaemonThreadExecutor`),
and with an `ExitDeadline` (the `chatui` command gives one) the process
ends itself if exiting still hangs (a task that swallows its cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Literal

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
from chatui.threads import DaemonThreadExecutor, ExitDeadline
from chatui.tools import build_registry
from chatui.turn import ToolRunner, TurnOutcome

SWITCH_INTERVAL = 0.001  # Seconds; Python's default is 0.005.
QUIT_GRACE = 5.0  # Seconds quitting waits for the turn to store and the provider to close.
EXIT_GRACE = 2.0  # Seconds the app may then take to exit, past which an ExitDeadline ends it.


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
        exit_deadline: ExitDeadline | None = None,
    ) -> None:
        """`tools`: what the model may call; by default the config's (`[tools]`).

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
            tools=build_registry(config.tools) if tools == "config" else tools,
            on_notice=self.show_notice,
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
        loop = self._signal_loop = asyncio.get_running_loop()
        # Whatever is left blocked in `asyncio.to_thread` (a tool's call, the model's
        # assembly) is never waited for on exit.
        loop.set_default_executor(DaemonThreadExecutor())
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
        if threading.current_thread() is threading.main_thread():
            # A plain handler, not the loop's: it runs even while the loop is stuck.
            self._sigterm_before = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_unmount(self) -> None:
        self.terminal_released = True
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
        self._arm_exit_deadline(again=self.session.quitting)
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
