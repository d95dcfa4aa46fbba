"""chatui without its UI: the store, the provider and its lifecycle, and the turns.

A `Session` opens, creates, deletes and titles the conversations this
chatui writes into, makes each `Turn` with the configured settings, and
drives the providers' lifecycle (`ProviderLifecycle`: prepare, notices,
conversation left, close). The user can switch provider and model at any
time (`switch`): the next turn uses the new one, with the conversation's
history as it is; each provider made is kept (a loaded local model stays
loaded) until the session closes. It shows nothing: what the user must be told
comes back as a `SessionError` whose message is fit to show as it is
(plain text, no markup), or goes to the `on_notice` callable.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatui.config import Config
from chatui.messages import Conversation, ModelRef, UserPrompt
from chatui.providers.lifecycle import (
    Notice,
    Provider,
    ProviderError,
    ProviderLifecycle,
    lifecycle_of,
)
from chatui.providers.registry import (
    ModelChoice,
    configured_choices,
    create_provider,
    model_label,
)
from chatui.redact import Redactor
from chatui.sanitize import visible
from chatui.store import Store
from chatui.turn_kinds import TurnAsk

if TYPE_CHECKING:  # Imported by the first turn: the first frame does without them.
    from chatui.tools.protocol import ToolRunner
    from chatui.turn import Turn, TurnObserver, TurnOutcome, TurnSettings

TITLE_LENGTH = 48
UNTITLED = "New conversation"  # A new conversation's title (see Store.create_conversation).
OPEN_ELSEWHERE = "That conversation is open in another chatui; close it there first."
GONE = "That conversation no longer exists."

Loading = Callable[[str | None], None]  # Preparation progress; None once it is over.
Factory = Callable[[ModelChoice], Provider]  # Makes a provider; raises ProviderError.


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
        make_tools: Callable[[], ToolRunner] | None = None,
        on_notice: Notice | None = None,
        factory: Factory | None = None,
        deferred: bool = False,
    ) -> None:
        """`on_notice` shows the user the providers' warnings (untrusted text).

        `factory` makes the provider of a `ModelChoice` the user switches to
        (default: `create_provider` with `config`). `deferred` (with no
        `provider`): the configured provider is made later, on a thread, by
        `prepare` (importing its SDK or llama.cpp takes up to a second: the app
        draws its first frame first). Meanwhile a turn can start: it waits for
        the provider before its request.

        `make_tools` makes the tools (instead of `tools`) when they are first
        asked for (`tools`): the first frame does without them.
        """
        self.config = config
        self.store = store
        self.provider = provider
        self.provider_error = provider_error
        self.clock = clock
        self._tools = tools
        self._make_tools = make_tools
        self.last_outcome: TurnOutcome | None = None
        self.quitting = False  # Once set, no new turn starts.
        self._factory = factory or (lambda c: create_provider(config, c.provider, c.model))
        self._on_notice = on_notice
        self._made: dict[ModelChoice, Provider] = {}
        self.choice = configured_choices(config)[0]
        if provider is not None:
            if provider.name != self.choice.provider:  # Not made from the config (a test's).
                self.choice = ModelChoice(provider.name, "", provider.model)
            self._adopt(self.choice, provider)
        self._preparing: dict[int, asyncio.Future[None]] = {}  # By id() of the provider.
        self._closed = False
        self._deferred = deferred and provider is None  # The configured provider, not made yet.
        self._making: asyncio.Future[None] | None = None  # Its making, once begun (`prepare`).
        self._made_future: asyncio.Future[None] | None = None  # Done once it is made, or not.

    @property
    def tools(self) -> ToolRunner | None:
        """What the model may call; made now if it is the first time they are asked for."""
        if self._make_tools is not None:
            self._tools, self._make_tools = self._make_tools(), None
        return self._tools

    @tools.setter
    def tools(self, tools: ToolRunner | None) -> None:
        self._tools, self._make_tools = tools, None

    @property
    def _lifecycle(self) -> ProviderLifecycle:
        return lifecycle_of(self.provider)

    def _adopt(self, choice: ModelChoice, provider: Provider) -> None:
        self._made[choice] = provider
        if (notice := self._on_notice) is not None:
            lifecycle_of(provider).on_notice = lambda text: notice(self.redact(text))

    def redact(self, text: str) -> str:
        """`text` without the keys, whole or in part: what the session says, the UI shows."""
        return Redactor(self.turn_settings().secrets)(text)

    # The provider

    @property
    def has_provider(self) -> bool:
        """Whether a provider answers turns: made, or (deferred) being made."""
        return self.provider is not None or self._deferred

    @property
    def startup_notice(self) -> str | None:
        """What to show in every conversation, if anything: why there is no provider."""
        return None if self.has_provider else self.provider_problem()

    def provider_problem(self) -> str:
        return self.redact(self.provider_error or "No model provider is configured.")

    def provider_label(self) -> tuple[str, str]:
        """(provider, model), as the status bar shows them."""
        if self.provider is None:
            if self._deferred:
                return self.choice.provider, self.choice.label or self.choice.model
            return self.config.provider, "not available"
        return self.provider.name, self.provider.model

    def choices(self) -> list[ModelChoice]:
        """What the user can switch to: each provider's configured model, then those used since."""
        choices = configured_choices(self.config)
        for choice in self._made:  # A model typed in the switcher, say: after its provider's.
            if choice not in choices:
                same = [n for n, c in enumerate(choices) if c.provider == choice.provider]
                choices.insert(same[-1] + 1 if same else len(choices), choice)
        return choices

    async def make_providers(self, choices: list[ModelChoice]) -> None:
        """Make the providers of `choices` not made yet, each on a thread (an SDK's import).

        One that cannot be made is left: `unavailable` then says why.
        """
        for choice in choices:
            if choice in self._made:
                continue
            try:
                provider = await asyncio.to_thread(self._factory, choice)
            except ProviderError:
                continue
            if choice not in self._made:  # Not made meanwhile on the loop (a switch).
                self._adopt(choice, provider)

    def unavailable(self, choice: ModelChoice) -> str | None:
        """Why `choice` cannot answer, as far as is known without I/O (a missing key)."""
        try:
            why = lifecycle_of(self._provider_for(choice)).unavailable()
        except ProviderError as error:
            why = str(error)
        return None if why is None else self.redact(why)

    async def problem(self) -> str | None:
        """Why the current provider cannot answer now (it may probe a server), or None."""
        if self._deferred:
            await asyncio.shield(self._made_signal())
        if self.provider is None:
            return self.provider_problem()
        if (preparing := self._preparing.get(id(self.provider))) is not None:
            try:
                await asyncio.shield(preparing)  # A model that fails to load cannot answer.
            except ProviderError as error:
                return self.redact(str(error))
        why = await self._lifecycle.problem()
        return None if why is None else self.redact(why)

    def switch(self, choice: ModelChoice) -> Provider:
        """Use `choice` from the next turn on (a running turn keeps its provider).

        Raises NoProvider, with the reason, if it cannot be made; the current
        provider then stays. Call `prepare` next (a local model loads).
        """
        try:
            provider = self._provider_for(choice)
        except ProviderError as error:
            raise NoProvider(str(error)) from None
        self.provider, self.choice, self.provider_error = provider, choice, None
        self._deferred = False  # A deferred provider still being made is not the current one.
        self._made_now()
        return provider

    def _provider_for(self, choice: ModelChoice) -> Provider:
        provider = self._made.get(choice)
        if provider is None:
            provider = self._factory(choice)
            self._adopt(choice, provider)
        return provider

    def begin_prepare(
        self, progress: Loading = lambda _detail: None
    ) -> asyncio.Future[None] | None:
        """Start preparing the current provider (once), reporting progress; its future.

        From the moment this returns, `problem()` waits for the preparation.
        `progress` gets None when it is over, however it ended.
        """
        provider = self.provider
        if provider is None:
            return None
        if (preparing := self._preparing.get(id(provider))) is None:
            preparing = asyncio.ensure_future(self._prepare(provider, progress))
            self._preparing[id(provider)] = preparing
        return preparing

    async def _prepare(self, provider: Provider, progress: Loading) -> None:
        try:
            await lifecycle_of(provider).prepare(progress)
        finally:
            progress(None)

    async def prepare(self, progress: Loading = lambda _detail: None) -> None:
        """Prepare the current provider (find and load its model), once, reporting progress.

        A deferred provider is made first, on a thread; if it cannot be, there
        is no provider and `startup_notice` says why. Raises ProviderError with
        a message for the user (each time it is awaited).
        """
        _ = self.tools  # Made now, after the first frame, rather than by the first turn.
        if self._deferred or self._making is not None:
            if self._making is None:
                self._making = asyncio.ensure_future(self._make(progress))
            await asyncio.shield(self._making)
        if (preparing := self.begin_prepare(progress)) is not None:
            await asyncio.shield(preparing)

    async def _make(self, progress: Loading) -> None:
        """Make the deferred provider on a thread; it becomes the current one unless switched."""
        choice = self.choice
        progress(f"starting {choice.provider}")
        try:
            choice, provider = await self._make_or_fall_back(choice)
        except ProviderError as error:
            if self._deferred:
                self.provider_error = str(error)
            return
        finally:
            progress(None)
            deferred, self._deferred = self._deferred, False
            self._made_now()
        self._adopt(choice, provider)
        if deferred:
            self.provider = provider
            # Before `problem()` wakes (it was told the provider is made): it then waits for
            # the model to load, and never says "ready" of one that is still loading.
            self.begin_prepare(progress)

    async def _make_or_fall_back(self, choice: ModelChoice) -> tuple[ModelChoice, Provider]:
        """`choice`'s provider; or, if it is the opened conversation's own model and cannot
        answer now (no key, no model file), the configured one's, with a notice.

        As `adopt_conversation_settings` does for a conversation opened later: the turn
        would otherwise fail on a model the user did not pick this time. Raises ProviderError.
        """
        configured = configured_choices(self.config)[0]
        try:
            provider: Provider | None = await asyncio.to_thread(self._factory, choice)
            why = lifecycle_of(provider).unavailable()
        except ProviderError as error:
            provider, why = None, str(error)
        if provider is not None and (why is None or choice == configured or not self._deferred):
            return choice, provider
        if choice == configured or not self._deferred:
            raise ProviderError(why or "")
        if provider is not None:
            self._adopt(choice, provider)  # The switcher offers it, with why it cannot answer.
        self.choice = configured
        self._cannot_answer(choice, self.redact(why or ""))
        return configured, await asyncio.to_thread(self._factory, configured)

    def _made_signal(self) -> asyncio.Future[None]:
        """What `problem()` and a turn wait for: the deferred provider made (or not)."""
        if self._made_future is None:
            self._made_future = asyncio.get_running_loop().create_future()
            if not self._deferred:
                self._made_future.set_result(None)
        return self._made_future

    def _made_now(self) -> None:
        if self._made_future is not None and not self._made_future.done():
            self._made_future.set_result(None)

    async def provider_made(self) -> Provider:
        """The provider a turn uses, once made; raises ProviderError if there is none."""
        if self._deferred:
            await asyncio.shield(self._made_signal())
        if self.provider is None:
            raise ProviderError(self.provider_problem())
        return self.provider

    async def close(self) -> None:
        """Close every provider made (once): each saves what it keeps; no turn starts after."""
        self.quitting = True
        if not self._closed:
            self._closed = True
            failures = []
            for provider in list(self._made.values()):
                try:
                    await lifecycle_of(provider).close()
                except Exception as error:  # The others still close.
                    failures.append(error)
            if failures:
                raise failures[0]

    # Turns

    def turn_settings(self, conversation: Conversation | None = None) -> TurnSettings:
        """A turn's settings; in `conversation`, with its own system prompt if it has one."""
        from chatui.turn import TurnSettings

        return TurnSettings(
            system_prompt=self.config.system_prompt
            if conversation is None
            else self.system_prompt_of(conversation),
            interrupted_note=self.config.interrupted_note,
            idle_timeout=self.config.idle_timeout,
            # The config's keys, and the provider's own (one built in code has no config).
            secrets=[*self.config.secrets(), *self._lifecycle.secrets],
            max_steps=self.config.tools.max_steps,
            interrupted_reply=self.config.interrupted_reply,
        )

    def new_turn(
        self,
        conversation: Conversation,
        prompt: str | TurnAsk,
        *,
        observer: TurnObserver,
    ) -> Turn:
        """A turn for `prompt` in `conversation`, ready to run (see `Turn`); raises NoProvider.

        `prompt`: a new prompt's text, or another ask (`chatui.turn_kinds`): a
        queued message, an edited prompt, a retry, a continue.

        `observer` is shown its events and answers its tools' approvals.
        """
        if not self.has_provider:
            raise NoProvider(self.provider_problem())
        from chatui.turn import Turn

        return Turn(
            conversation=conversation,
            prompt=prompt,
            provider=self.provider or self.provider_made,
            store=self.store,
            observer=observer,
            settings=self.turn_settings(conversation),
            tools=self.tools,
            clock=self.clock,
        )

    def turn_finished(self, turn: Turn, outcome: TurnOutcome) -> None:
        """Record `outcome`; a first turn titles its conversation from its prompt.

        Whatever the reply did (failed too): the prompt is the conversation's
        first item all the same. Only a prompt that could not be stored, and so
        is not in the conversation, titles nothing. Raises StorageFailed if the
        title could not be saved (it is kept in memory).
        """
        self.last_outcome = outcome
        conversation = turn.conversation
        if conversation.title != UNTITLED or outcome.prompt not in conversation.items:
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
                gone = not store.exists(conversation_id)
                raise ConversationRefused(GONE if gone else OPEN_ELSEWHERE)
            else:
                conversation = store.load_conversation(conversation_id)
            if conversation.id != current.id:
                store.release_conversation(current.id)
        except (sqlite3.Error, KeyError, ValueError) as error:  # ValueError: damaged items.
            raise StorageFailed(f"The conversation could not be opened: {error}") from None
        for provider in list(self._made.values()):
            await lifecycle_of(provider).conversation_left()
        return conversation

    async def fork(self, conversation: Conversation, prompt: UserPrompt) -> Conversation:
        """A new conversation holding `conversation`'s path before `prompt`: edit it there.

        The original's items, versions, draft and queue are left as they are:
        it is only released, as any conversation one leaves. The fork is owned
        by this chatui and becomes the open one.
        Raises StorageFailed if the store fails.
        """
        try:
            fork = self.store.fork_conversation(conversation.id, prompt.id)
            self.store.release_conversation(conversation.id)
        except KeyError:  # The conversation, or the prompt, is no longer stored.
            raise ConversationRefused(GONE) from None
        except sqlite3.Error as error:
            raise StorageFailed(f"The conversation could not be branched: {error}") from None
        for provider in list(self._made.values()):
            await lifecycle_of(provider).conversation_left()
        return fork

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
        return self.store.exists(conversation_id)

    # A conversation's own settings: its system prompt and its model

    def system_prompt_of(self, conversation: Conversation) -> str:
        """The system prompt `conversation`'s next turn sends: its own, else the config's."""
        own = conversation.system_prompt
        return self.config.system_prompt if own is None else own

    def set_system_prompt(self, conversation: Conversation, text: str | None) -> None:
        """Give `conversation` its own system prompt ("" for none at all); None: the config's.

        The next turn sends it; a turn already running keeps the one it began
        with. Raises StorageFailed if it could not be stored: it applies all the
        same until chatui quits.
        """
        conversation.system_prompt = text
        try:
            self.store.set_system_prompt(conversation.id, text)
        except sqlite3.Error as error:
            raise StorageFailed(
                f"The system prompt applies now but could not be saved for the next start: {error}"
            ) from None

    def model_of(self, conversation: Conversation) -> ModelChoice | None:
        """`conversation`'s own model as the switcher offers it, or None if it has none."""
        if (own := conversation.model) is None:
            return None
        for choice in self.choices():
            if (choice.provider, choice.model) == (own.provider, own.model):
                return choice
        return ModelChoice(own.provider, own.model, model_label(own.provider, own.model))

    def keep_model(self, conversation: Conversation) -> None:
        """Keep the model in use as `conversation`'s own: opening it again answers with it.

        Raises StorageFailed if it could not be stored (it is kept until chatui quits).
        """
        model = ModelRef(self.choice.provider, self.choice.model)
        if conversation.model == model:
            return
        conversation.model = model
        try:
            self.store.set_model(conversation.id, model)
        except sqlite3.Error as error:
            raise StorageFailed(
                f"The model could not be saved with the conversation for the next start: {error}"
            ) from None

    def adopt_conversation_settings(
        self, conversation: Conversation, *, model_named: bool = False
    ) -> None:
        """Answer `conversation` with its own model, if it has one: call it once it is opened.

        Its system prompt needs nothing: each turn reads it (`turn_settings`).
        A conversation without a model of its own keeps the model in use: the
        user's latest pick goes on, as it does into a new conversation, rather
        than the config's default coming back unasked. `model_named`: the user
        named a model on the command line; it stays, and becomes the
        conversation's own. A model that cannot answer now (its provider has no
        key any more, its GGUF file is gone) is not switched to: the model in
        use answers, the notice says why, and the conversation keeps its own
        for when it can again. After a switch, prepare the provider
        (`begin_prepare`: a local model loads).
        """
        if model_named:
            try:
                self.keep_model(conversation)
            except StorageFailed as error:
                self._notify(str(error))
            return
        own = self.model_of(conversation)
        if own is None or (own.provider, own.model) == (self.choice.provider, self.choice.model):
            return
        if self._deferred and self._making is None:
            self.choice = own  # Made after the first frame, in place of the configured one.
            return
        why = self.unavailable(own)
        if why is None:
            try:
                self.switch(own)
                return
            except NoProvider as error:
                why = str(error)
        self._cannot_answer(own, why)

    def _cannot_answer(self, own: ModelChoice, why: str) -> None:
        """Say that the conversation's own model `own` cannot answer now, and why."""
        name = " · ".join(part for part in (own.provider, own.label) if part)
        if self.startup_notice is None:
            now = " · ".join(part for part in self.provider_label() if part)
            self._notify(
                f"This conversation's model ({name}) cannot answer now, so {now} answers "
                f"instead; the conversation keeps its own for later. {why}"
            )
        else:
            self._notify(f"This conversation's model ({name}) cannot answer now. {why}")

    def _notify(self, text: str) -> None:
        """Tell the user (through `on_notice`), keys redacted, control characters visible."""
        if (notice := self._on_notice) is not None:
            notice(visible(self.redact(text)))


def _title(prompt: str) -> str:
    """A conversation's title from its first prompt: one line, at most TITLE_LENGTH."""
    title = " ".join(prompt.split()).encode(errors="replace").decode()
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1] + "…"
    return title
