"""The open conversation's queued messages: typed while a reply streamed, sent after it.

The store holds the queue (so it survives a switch, a quit and a restart);
`MessageQueue` keeps the open conversation's copy in step with it and shows
it in the `QueuePanel`. A queued message leaves the queue in one of two ways
only: sent (a turn started with `NewPrompt(text, id=message.id)`, whose
prompt write removes it from the store in the same transaction), or taken
back into the composer. So a message is never both queued and sent, nor
neither.

The chat screen decides when to send: the first message when a turn
completes, or on Ctrl+S when no turn runs.
"""

from __future__ import annotations

from chatui.messages import QueuedMessage
from chatui.store import Store
from chatui.widgets.queue_panel import QueuePanel


class MessageQueue:
    """The queued messages of the open conversation, in the store and on screen.

    The store's methods raise `sqlite3.Error`; these pass it on, and the
    screen keeps the text in the composer then.
    """

    def __init__(self, store: Store, panel: QueuePanel) -> None:
        self._store = store
        self._panel = panel
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

    def load(self, conversation_id: str) -> None:
        """Show `conversation_id`'s queue as stored (on opening it, and after each turn)."""
        if conversation_id != self.conversation_id:
            self.conversation_id = conversation_id
            self.messages = []
            self._show()
        queue = self._store.load_queue(conversation_id)
        self.messages = [message for message in queue if message.id != self._sending]
        self._show()

    def add(self, text: str) -> QueuedMessage:
        """Queue `text` after the others: stored first, then shown."""
        assert self.conversation_id is not None
        message = self._store.queue_message(self.conversation_id, text)
        self.messages.append(message)
        self._show()
        return message

    def take(self, message_id: str | None = None) -> QueuedMessage | None:
        """Take a message (by default the last) out of the queue unsent; None if there is none."""
        if message_id is None:
            message = self.messages[-1] if self.messages else None
        else:
            message = next((m for m in self.messages if m.id == message_id), None)
        if message is None:
            return None
        self._store.remove_queued(message.id)  # False: not stored any more, all the same.
        self.messages.remove(message)
        self._show()
        return message

    def turn_started(self, prompt_id: str) -> None:
        """A turn was accepted; if it sends a queued message, that one is off the queue."""
        self._sending = prompt_id
        self.messages = [message for message in self.messages if message.id != prompt_id]
        self.waiting = True
        self._show()

    def turn_ended(self) -> None:
        """The turn is over: nothing sends the queue by itself now (`load` it again: a
        prompt the store could not keep is still queued there).
        """
        self._sending = None
        self.waiting = False
        self._show()

    def _show(self) -> None:
        self._panel.show(self.messages, waiting=self.waiting)
