"""chatui without its UI: the store, the provider and its lifecycle, and the turns.

A `Session` opens, creates, deletes and titles the conversations this
chatui writes into, makes each `Turn` with the configured settings, and
drives the provider's lifecycle (`ProviderLifecycle`: prepare, notices,
conversation left, close). It shows nothing: what the user must be told
comes back as a `SessionError` whose message is fit to show as it is
(plain text, no markup), or goes to the `on_notice` callable.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable

from chatui.config import Config
from chatui.messages import Conversation, ResponseState
from chatui.providers.base import Notice, Provider, lifecycle_of
from chatui.store import Store
from chatui.turn import Approver, Sink, ToolRunner, Turn, TurnOutcome, TurnSettings, deny_all

TITLE_LENGTH = 48
UNTITLED = "New conversation"  # A new conversation's title (see Store.create_conversation).
OPEN_ELSEWHERE = "That conversation is open in another chatui; close it there first."
GONE = "That conversation no longer exists."

Loading = Callable[[str | None], None]  # Preparation progress; None once it is over.


class SessionError(Exception):
    """Something the session could not do; the message says what, for the user."""


class ConversationRefused(SessionError):
    """Not opened or deleted: it is gone, or open in another chatui (a warning)."""


class StorageFailed(SessionError):
    """The store failed (an error)."""


class NoProvider(SessionError):
    """No turn can start: there is no provider (the message says why)."""


class Session:
    """One running chatui's core. Give it a provider, or the reason there is none."""

    def __init__(
        self,
        config: Config,
        store: Store,
        provider: Provider | None,
        *,
        provider_error: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tools: ToolRunner | None = None,
        on_notice: Notice | None = None,
    ) -> None:
        """`on_notice` shows the user the provider's warnings (untrusted text)."""
        self.config = config
        self.store = store
        self.provider = provider
        self.provider_error = provider_error
        self.clock = clock
        self.tools = tools
        self.last_outcome: TurnOutcome | None = None
        self.quitting = False  # Once set, no new turn starts.
        self._lifecycle = lifecycle_of(provider)
        if on_notice is not None:
            self._lifecycle.on_notice = on_notice
        self._prepared = self._closed = False

    # The provider

    @property
    def startup_notice(self) -> str | None:
        """What to show in every conversation, if anything: why there is no provider."""
        return None if self.provider is not None else self.provider_problem()

    def provider_problem(self) -> str:
        return self.provider_error or "No model provider is configured."

    def provider_label(self) -> tuple[str, str]:
        """(provider, model), as the status bar shows them."""
        if self.provider is None:
            return self.config.provider, "not available"
        return self.provider.name, self.provider.model

    async def prepare(self, progress: Loading = lambda _detail: None) -> None:
        """Prepare the provider (find and load its model), once, reporting progress.

        Raises ProviderError with a message for the user. `progress` gets
        None when the preparation is over, however it ended.
        """
        if self._prepared:
            return
        self._prepared = True
        try:
            await self._lifecycle.prepare(progress)
        finally:
            progress(None)

    async def close(self) -> None:
        """Close the provider (once): it saves what it keeps, and no turn starts after."""
        self.quitting = True
        if not self._closed:
            self._closed = True
            await self._lifecycle.close()

    # Turns

    def turn_settings(self) -> TurnSettings:
        return TurnSettings(
            system_prompt=self.config.system_prompt,
            interrupted_note=self.config.interrupted_note,
            idle_timeout=self.config.idle_timeout,
            # The config's keys, and the provider's own (one built in code has no config).
            secrets=[*self.config.secrets(), *self._lifecycle.secrets],
        )

    def new_turn(
        self,
        conversation: Conversation,
        prompt: str,
        *,
        sink: Sink,
        approve: Approver = deny_all,
        before_storing_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> Turn:
        """A turn for `prompt` in `conversation`, ready to run (see `Turn`); raises NoProvider."""
        if self.provider is None:
            raise NoProvider(self.provider_problem())
        return Turn(
            conversation=conversation,
            prompt=prompt,
            provider=self.provider,
            store=self.store,
            sink=sink,
            settings=self.turn_settings(),
            tools=self.tools,
            approve=approve,
            before_storing_stop=before_storing_stop,
            clock=self.clock,
        )

    def turn_finished(self, turn: Turn, outcome: TurnOutcome) -> None:
        """Record `outcome`; a first turn that did not fail titles its conversation.

        Raises StorageFailed if the title could not be saved (it is kept in memory).
        """
        self.last_outcome = outcome
        conversation = turn.conversation
        if conversation.title != UNTITLED or outcome.state is ResponseState.FAILED:
            return
        conversation.title = title = _title(outcome.prompt.text)
        try:
            self.store.rename_conversation(conversation.id, title)
        except sqlite3.Error as error:
            raise StorageFailed(f"The conversation's title could not be saved: {error}") from None

    # Conversations

    def open_startup_conversation(self) -> Conversation:
        """The latest conversation if it is empty and no other chatui has it, else a new one."""
        return self.store.open_startup_conversation()

    async def open_conversation(
        self, conversation_id: str | None, current: Conversation
    ) -> Conversation:
        """Leave `current` for a stored conversation, or for a new one with None.

        An empty `current` serves as the new one. Each running chatui writes
        only into conversations it owns: one that another chatui has open is
        refused (ConversationRefused), and so is one that is gone. Raises
        StorageFailed if the store fails; `current` is then still the open one.
        """
        store = self.store
        try:
            if conversation_id is None:
                fresh = not current.items and store.claim_conversation(current.id)
                conversation = current if fresh else store.create_conversation()
            elif not store.claim_conversation(conversation_id):
                gone = conversation_id not in dict(store.list_conversations())
                raise ConversationRefused(GONE if gone else OPEN_ELSEWHERE)
            else:
                conversation = store.load_conversation(conversation_id)
            if conversation.id != current.id:
                store.release_conversation(current.id)
        except (sqlite3.Error, KeyError) as error:
            raise StorageFailed(f"The conversation could not be opened: {error}") from None
        await self._lifecycle.conversation_left()
        return conversation

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a stored conversation (stop its turn first); refused if open elsewhere."""
        try:
            if self.store.owned_by_other(conversation_id):
                raise ConversationRefused(OPEN_ELSEWHERE)
            self.store.delete_conversation(conversation_id)
        except sqlite3.Error as error:
            raise StorageFailed(f"The conversation could not be deleted: {error}") from None

    def exists(self, conversation_id: str) -> bool:
        """Whether the conversation is still stored (another chatui may have deleted it)."""
        return conversation_id in dict(self.store.list_conversations())


def _title(prompt: str) -> str:
    """A conversation's title from its first prompt: one line, at most TITLE_LENGTH."""
    title = " ".join(prompt.split()).encode(errors="replace").decode()
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1] + "…"
    return title
