"""The open conversation's queued messages: typed while a reply streamed, sent after it.

The store holds the queue (so it survives a switch, a quit and a restart);
`MessageQueue` keeps the open conversation's copy in step with it and shows
it in the `QueuePanel`. A queued message leaves the queue in one of two ways
only: sent (a turn started with `next_prompt()`, whose prompt write removes
it from the store in the same transaction), or taken back into the composer.
So a message is never both queued and sent, nor neither.

A turn that completes sends the first message next (`turn_ended`); after a
stop or a failure they wait for the user (Ctrl+S), who the panel tells how.
The chat screen starts the turns, and says when nothing may go out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatui.messages import QueuedMessage, ResponseState
from chatui.store import Store
from chatui.turn_kinds import NewPrompt
from chatui.widgets.queue_panel import QueuePanel

if TYPE_CHECKING:
    from chatui.turn import TurnOutcome


class MessageQueue:
    """The queued messages of the open conversation, in the store and on screen.

    A store failure (`sqlite3.Error`) is told through `warn` (a sentence) and
    leaves the queue as it was: a message that could not be queued stays
    with the caller (the composer), one that could not be taken out stays
    queued.
    """

    def __init__(self, store: Store, panel: QueuePanel, warn: Callable[[str], None]) -> None:
        self._store = store
        self._panel = panel
        self._warn = warn
        self.conversation_id: str | None = None
        self.messages: list[QueuedMessage] = []
        self.waiting = False  # A turn runs: the first message goes when it completes.
        # The message a turn was started with and has not stored yet: no longer shown,
        # though the store holds it until the turn's prompt write takes it out.
        self._sending: str | None = None

    @property
    def first(self) -> QueuedMessage | None:
        """The message sent next, if any."""
        return self.messages[0] if self.messages else None

    def next_prompt(self) -> NewPrompt | None:
        """The turn that sends the first message: with its id, so its prompt write unqueues it."""
        first = self.first
        return None if first is None else NewPrompt(first.text, id=first.id)

    def load(self, conversation_id: str) -> None:
        """Show `conversation_id`'s queue as stored (on opening it, and after each turn)."""
        if conversation_id != self.conversation_id:
            self.conversation_id = conversation_id
            self.messages = []
            self._show()
        try:
            queue = self._store.load_queue(conversation_id)
        except sqlite3.Error as error:
            self._warn(f"The conversation's queued messages could not be read: {error}")
            return
        self.messages = [message for message in queue if message.id != self._sending]
        self._show()

    def add(self, text: str) -> QueuedMessage | None:
        """Queue `text` after the others: stored first, then shown; None if the store failed."""
        assert self.conversation_id is not None
        try:
            message = self._store.queue_message(self.conversation_id, text)
        except sqlite3.Error as error:
            self._warn(f"Your message could not be queued: {error}. It stays in the composer.")
            return None
        self.messages.append(message)
        self._show()
        return message

    def take(self, message_id: str | None = None) -> QueuedMessage | None:
        """Take a message (by default the last) out of the queue unsent.

        None if there is none, or if the store could not take it out (then
        it stays queued, and the user is told).
        """
        if message_id is None:
            message = self.messages[-1] if self.messages else None
        else:
            message = next((m for m in self.messages if m.id == message_id), None)
        if message is None:
            return None
        try:
            self._store.remove_queued(message.id)  # False: not stored any more, all the same.
        except sqlite3.Error as error:
            self._warn(f"The queued message could not be taken out of the queue: {error}")
            return None
        self.messages.remove(message)
        self._show()
        return message

    def turn_started(self, prompt_id: str) -> None:
        """A turn was accepted; if it sends a queued message, that one is off the queue."""
        self._sending = prompt_id
        self.messages = [message for message in self.messages if message.id != prompt_id]
        self.waiting = True
        self._show()

    def turn_ended(self, outcome: TurnOutcome, *, held: bool) -> NewPrompt | None:
        """The turn is over: the turn that sends the first message next, if one goes now.

        Only after a reply that completed and was kept, and not while `held`
        (the user asked for a stop meanwhile, or the screen leaves or quits).
        Otherwise the messages stay, and the panel says how to send them.
        The queue is read again first: a prompt the store could not keep is
        still queued there.
        """
        self._sending = None
        self.waiting = False
        self._show()
        assert self.conversation_id is not None  # Loaded when its conversation was shown.
        self.load(self.conversation_id)
        completed = outcome.state is ResponseState.COMPLETE and not outcome.refused
        return self.next_prompt() if completed and not held else None

    def _show(self) -> None:
        self._panel.show(self.messages, waiting=self.waiting)
