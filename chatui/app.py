"""The Textual application: wiring of config, store, provider and screens."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.driver import Driver
from textual.message import Message

from chatui.config import Config
from chatui.messages import ResponseState
from chatui.providers.base import Provider, ProviderError
from chatui.screens.chat import ChatScreen
from chatui.screens.conversations import NEW, ConversationList
from chatui.store import Store
from chatui.turn import Turn, TurnOutcome, TurnSettings

TITLE_LENGTH = 48
QUIT_GRACE = 5.0  # Seconds quitting waits for the turn to store and the provider to close.
OPEN_ELSEWHERE = "That conversation is open in another chatui; close it there first."
PLAIN_ERROR: dict[str, Any] = {"severity": "error", "markup": False}


class ChatApp(App[None]):
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
    ) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.provider = provider
        self.provider_error = provider_error
        self.clock = clock
        self.last_outcome: TurnOutcome | None = None
        self.quitting = False  # Once set, no new turn starts.
        self._quit_task: asyncio.Task[None] | None = None
        self._waiting_escapes: deque[events.Key] = deque()  # From the terminal, not yet taken.

    def post_message(self, message: Message) -> bool:
        """Queue `message`; but an Esc that stops a running turn acts as it arrives.

        A key waits in the app's queue, then visits the screen's bindings, one
        trip through the event loop each; after a frame those trips also wait
        behind every widget the frame resized. Taken here, the stop is
        acknowledged the moment the key reaches the app.
        """
        if _is_escape(message) and _on_event_loop() and self._stop_for_escape(message):
            return True
        return super().post_message(message)

    def _build_driver(self, *args: Any, **kwargs: Any) -> Driver:
        """Textual's driver, but the terminal's Esc reaches the loop in one trip.

        The driver hands each key to the loop as a coroutine, which takes two
        trips through the loop before the app sees the key; a frame that falls
        due in between holds the key back by its whole length. An Esc is
        handed over as a plain callback instead, and is also left where the
        chat screen's next frame looks first (`stop_for_waiting_escape`), in
        case that frame runs before the callback. When it stops nothing, it is
        posted one trip later, so it keeps its place among the keys before and
        after it (each of those also reaches the app on its second trip).
        """
        driver = super()._build_driver(*args, **kwargs)
        send_message = driver.send_message
        loop = asyncio.get_running_loop()

        def send_escape_at_once(message: Message) -> None:  # In the terminal's input thread.
            if _is_escape(message):
                self._waiting_escapes.append(message)
                loop.call_soon_threadsafe(self._escape_from_terminal, message)
            else:
                send_message(message)

        driver.send_message = send_escape_at_once  # type: ignore[method-assign]
        return driver

    def _escape_from_terminal(self, message: events.Key) -> None:
        try:
            self._waiting_escapes.remove(message)
        except ValueError:
            return  # A frame has taken it: it stopped the turn.
        if not self._stop_for_escape(message):
            asyncio.get_running_loop().call_soon(super().post_message, message)

    def stop_for_waiting_escape(self) -> None:
        """Let an Esc still on its way from the terminal stop the turn now, if it would.

        The chat screen calls this as each frame starts, so the stop comes
        before that frame, not after it; the stop's own early draw shows it.
        """
        waiting = self._waiting_escapes
        if waiting and self._stop_for_escape(waiting[0]):
            waiting.popleft()  # Only this thread takes from it.

    def _stop_for_escape(self, key: Message) -> bool:
        """Stop the running turn for an Esc, if the chat screen acts on one now."""
        stack = self.screen_stack
        return (
            bool(stack)
            and isinstance(stack[-1], ChatScreen)
            and stack[-1].stop_for_escape(key.time)
        )

    @property
    def startup_notice(self) -> str | None:
        return None if self.provider is not None else self.provider_problem()

    def provider_problem(self) -> str:
        return self.provider_error or "No model provider is configured."

    def provider_label(self) -> tuple[str, str]:
        if self.provider is None:
            return self.config.provider, "not available"
        return self.provider.name, self.provider.model

    def turn_settings(self) -> TurnSettings:
        return TurnSettings(
            system_prompt=self.config.system_prompt,
            interrupted_note=self.config.interrupted_note,
            idle_timeout=self.config.idle_timeout,
            secrets=self.config.secrets(),
        )

    @property
    def chat(self) -> ChatScreen:
        screen = self.get_screen("chat")
        assert isinstance(screen, ChatScreen)
        return screen

    async def on_mount(self) -> None:
        try:
            self.theme = self.config.theme
        except Exception:
            self.notify(
                f"Unknown theme {self.config.theme!r}; using the default.",
                severity="warning",
                markup=False,
            )
        # The latest conversation if it is empty and no other chatui has it, else a new one.
        conversation = self.store.open_startup_conversation()
        self.install_screen(ChatScreen(conversation), "chat")
        await self.push_screen("chat")
        if hasattr(self.provider, "on_notice"):
            self.provider.on_notice = self.show_notice  # type: ignore[union-attr]
        if hasattr(self.provider, "prepare"):
            self.run_worker(self._prepare_provider(), group="prepare")
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
        except (NotImplementedError, RuntimeError):
            pass  # Not on the main thread (tests) or not supported (Windows).

    def show_notice(self, text: str) -> None:
        """A warning from the provider (untrusted text, shown literally)."""
        self.notify(text, severity="warning", markup=False, timeout=8)

    async def _prepare_provider(self) -> None:
        """Load the model in the background, with progress in the status bar."""
        chat = self.chat
        chat.show_loading("loading model")
        try:
            await self.provider.prepare(chat.show_loading)  # type: ignore[union-attr]
        except ProviderError as error:
            await chat.show_error(str(error))
        finally:
            chat.show_loading(None)

    async def action_quit(self) -> None:
        """Quit: stop the running turn the same way Esc does, store it, then exit.

        A stop or a provider close that does not finish within `QUIT_GRACE`
        seconds is left behind, and a second quit exits at once: quitting
        never hangs and never ends in a traceback.
        """
        if self.quitting:
            self.exit()
            return
        self.quitting = True
        # In a task of its own, so keys keep flowing meanwhile (a second quit among them).
        self._quit_task = asyncio.create_task(self._stop_close_and_exit())

    async def _stop_close_and_exit(self) -> None:
        try:
            async with asyncio.timeout(QUIT_GRACE):
                if self.is_screen_installed("chat"):
                    await self.chat.stop_and_wait()
                if hasattr(self.provider, "close"):
                    await self.provider.close()  # type: ignore[union-attr]
        except (Exception, TimeoutError) as error:
            self.log.error(f"quitting: {error!r}")  # Leaving anyway; nothing to show.
        finally:
            self.exit()

    async def open_conversation(self, conversation_id: str | None) -> None:
        """Switch to a stored conversation, or to a new one for None.

        Each running chatui writes only into conversations it owns: one that
        another chatui has open is refused with a message.
        """
        chat = self.chat
        await chat.stop_and_wait()
        current = chat.conversation
        try:
            if conversation_id is None:
                fresh = not current.items and self.store.claim_conversation(current.id)
                conversation = current if fresh else self.store.create_conversation()
            elif not self.store.claim_conversation(conversation_id):
                gone = conversation_id not in dict(self.store.list_conversations())
                notice = "That conversation no longer exists." if gone else OPEN_ELSEWHERE
                self.notify(notice, severity="warning", markup=False)
                return
            else:
                conversation = self.store.load_conversation(conversation_id)
            if conversation.id != current.id:
                self.store.release_conversation(current.id)
        except (sqlite3.Error, KeyError) as error:
            self.notify(f"The conversation could not be opened: {error}", **PLAIN_ERROR)
            return
        if hasattr(self.provider, "conversation_left"):
            await self.provider.conversation_left()  # type: ignore[union-attr]
        await chat.show_conversation(conversation)

    def show_conversation_list(self) -> None:
        async def chosen(conversation_id: str | None) -> None:
            current = self.chat.conversation.id
            if conversation_id == NEW:
                await self.open_conversation(None)
            elif conversation_id is not None and conversation_id != current:
                await self.open_conversation(conversation_id)
            elif current not in dict(self.store.list_conversations()):
                await self.open_conversation(None)  # The open one was deleted.

        self.push_screen(
            ConversationList(self.store, self.chat.conversation.id, self.delete_conversation),
            chosen,
        )

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a stored conversation; the open one's turn is stopped and stored first."""
        if conversation_id == self.chat.conversation.id:
            await self.chat.stop_and_wait()
        try:
            if self.store.owned_by_other(conversation_id):
                self.notify(OPEN_ELSEWHERE, severity="warning", markup=False)
                return
            self.store.delete_conversation(conversation_id)
        except sqlite3.Error as error:
            self.notify(f"The conversation could not be deleted: {error}", **PLAIN_ERROR)

    def turn_finished(self, turn: Turn, outcome: TurnOutcome) -> None:
        """Called by the chat screen once a turn's outcome is on screen."""
        self.last_outcome = outcome
        conversation = turn.conversation
        if conversation.title == "New conversation" and outcome.state is not ResponseState.FAILED:
            title = " ".join(outcome.prompt.text.split()).encode(errors="replace").decode()
            if len(title) > TITLE_LENGTH:
                title = title[: TITLE_LENGTH - 1] + "…"
            conversation.title = title
            try:
                self.store.rename_conversation(conversation.id, title)
            except sqlite3.Error as error:
                self.notify(f"The conversation's title could not be saved: {error}", **PLAIN_ERROR)


def _is_escape(message: Message) -> bool:
    return isinstance(message, events.Key) and message.key == "escape"


def _on_event_loop() -> bool:
    """Whether this runs in the event loop's thread (keys can be posted from others)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
