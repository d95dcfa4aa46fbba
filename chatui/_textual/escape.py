"""A stop key from the terminal (Esc, Ctrl+C) that acts on its first trip through the event loop.

Textual's driver hands each key to the loop as a coroutine, which takes two
trips through the loop before the app sees the key, then the key waits in
the app's queue and visits the screen's bindings, a trip each; a frame that
falls due in between holds the key back by its whole length. Here a stop key
(`STOP_KEYS`: Esc, and Ctrl+C, whether the terminal sent byte 0x03 or the
kitty protocol's sequence, both parsed as "ctrl+c") is handed over as a plain
callback instead and offered to `take_escape()` as it arrives. It is also
left where the screen's next frame looks first, in case that frame runs
before the callback. A key that `take_escape()` declines is posted one trip
later, so it keeps its place among the keys before and after it (each of
those also reaches the app on its second trip).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeGuard, TypeVar

from textual import events
from textual.app import App
from textual.driver import Driver
from textual.message import Message
from textual.screen import Screen

ReturnType = TypeVar("ReturnType")

STOP_KEYS = frozenset({"escape", "ctrl+c"})  # The keys that stop a reply.


class QuickEscapeApp(App[ReturnType], Generic[ReturnType]):
    """An App that offers each stop key to `take_escape()` the moment it reaches the loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting_escapes: deque[events.Key] = deque()  # From the terminal, not yet taken.

    def take_escape(self, key: events.Key) -> bool:
        """Act on `key` (Esc or Ctrl+C) now and return True, or False to let it go its usual way."""
        return False

    def post_message(self, message: Message) -> bool:
        if _is_escape(message) and _on_event_loop() and self.take_escape(message):
            return True
        return super().post_message(message)

    def _build_driver(self, *args: Any, **kwargs: Any) -> Driver:
        driver = super()._build_driver(*args, **kwargs)
        send_message = driver.send_message
        loop = asyncio.get_running_loop()

        def send_escape_at_once(message: Message) -> None:  # In the terminal's input thread.
            if _is_escape(message):
                self._waiting_escapes.append(message)
                loop.call_soon_threadsafe(self._escape_from_terminal, message)
            else:
                send_message(message)

        # This one driver instance only: its input thread sends through this attribute.
        driver.send_message = send_escape_at_once  # type: ignore[method-assign]
        return driver

    def _escape_from_terminal(self, message: events.Key) -> None:
        try:
            self._waiting_escapes.remove(message)
        except ValueError:
            return  # A frame has taken it.
        if not self.take_escape(message):
            asyncio.get_running_loop().call_soon(super().post_message, message)

    def take_waiting_escape(self) -> None:
        """Offer a stop key still on its way from the terminal to `take_escape()` now."""
        waiting = self._waiting_escapes
        if waiting and self.take_escape(waiting[0]):
            waiting.popleft()  # Only the loop's thread takes from it.


class EscapeFirstScreen(Screen[ReturnType], Generic[ReturnType]):
    """A screen whose every frame first lets a waiting stop key act (`take_waiting_escape`).

    So a stop comes before the frame that was due when the key arrived, not
    after it; the stop's own early draw then shows it.
    """

    def _on_timer_update(self) -> None:  # Textual's frame callback.
        app = self.app
        if isinstance(app, QuickEscapeApp):
            app.take_waiting_escape()
        super()._on_timer_update()


def _is_escape(message: Message) -> TypeGuard[events.Key]:
    """Whether `message` is a stop key: Esc or Ctrl+C."""
    return isinstance(message, events.Key) and message.key in STOP_KEYS


def _on_event_loop() -> bool:
    """Whether this runs in the event loop's thread (keys can be posted from others)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
