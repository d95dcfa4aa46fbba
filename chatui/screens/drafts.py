"""The composer's draft, kept with its conversation: nothing the user writes is lost.

The draft is stored a moment after typing stops (`DRAFT_SAVE_DELAY`), and at
once on a switch and on quitting; it comes back when its conversation is
opened again. A draft the store cannot keep stays in the composer (told
once): it comes along to the next conversation opened, and quitting prints
it (`DraftKeeper.unsaved`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chatui.messages import Conversation, UserPrompt
from chatui.store import Store
from chatui.widgets.composer import Composer

DRAFT_SAVE_DELAY = 1.0  # Seconds after the last change to the draft that it is stored.


class DraftKeeper:
    """Stores the composer's draft as the open conversation's, and puts it back on opening.

    `conversation_id` says which conversation is open, at each save; `warn`
    tells the user what went wrong (a sentence).
    """

    def __init__(
        self,
        store: Store,
        composer: Composer,
        conversation_id: Callable[[], str],
        warn: Callable[[str], None],
    ) -> None:
        self._store = store
        self._composer = composer
        self._conversation_id = conversation_id
        self._warn = warn
        self.ready = False  # The open conversation's draft is in the composer: saves may run.
        self.saved: tuple[str, str] | None = None  # (conversation id, draft) last stored.
        self.error: str | None = None  # Why the last try to store the draft failed.
        self._timer: asyncio.TimerHandle | None = None  # The debounced save.

    def save(self) -> bool:
        """Store the composer's draft as the open conversation's, now; False if the store failed.

        A failure is told once, until a draft is stored again. Meanwhile the
        text stays in the composer: it comes along to the next conversation
        opened, and quitting prints it (`unsaved`).
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.ready:
            return True
        saved = (self._conversation_id(), self._composer.draft)
        if saved == self.saved:
            return True
        try:
            self._store.save_draft(*saved)
        except sqlite3.Error as error:
            if self.error is None:
                self._warn(f"Your draft could not be stored: {error}. It stays in the composer.")
            self.error = str(error)
            return False
        self.saved, self.error = saved, None
        return True

    @property
    def unsaved(self) -> str | None:
        """The draft the store failed to keep at the last try, or None."""
        if self.error is None or not self._composer.draft.strip():
            return None
        return self._composer.draft

    def changed(self) -> None:
        """The composer's text changed: store it once typing pauses (not at every key)."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(DRAFT_SAVE_DELAY, self.save)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No save runs meanwhile: while the screen switches conversations.

        Until the opened one's draft is in the composer, a save due would
        store the draft being left as the opened conversation's.
        """
        self.ready = False
        try:
            yield
        finally:
            self.ready = True

    def load(self, conversation: Conversation, *, carry: bool = False) -> None:
        """Put `conversation`'s draft in the composer; `carry`: the composer's after it."""
        prompts = [item.text for item in conversation.items if isinstance(item, UserPrompt)]
        carried = self._composer.draft if carry else ""
        try:
            own = self._store.load_draft(conversation.id)
        except sqlite3.Error as error:
            self._warn(f"The conversation's draft could not be read: {error}")
            own = ""
        draft = own
        if carried.strip() and carried != own:
            draft = f"{own}\n{carried}" if own.strip() else carried
        self._composer.load_draft(draft, prompts)
        self.ready = True
        self.saved = (conversation.id, own)
        if draft != own:
            self.save()
