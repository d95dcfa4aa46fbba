"""Run one user turn: the request/tool loop, the cancel token, the typed outcome.

A `Turn` owns a `CancelToken` that exists before any provider work starts.
`Turn.cancel()` (Esc, or the app quitting) sets the token and cancels the
turn's own task, which runs the model requests; the provider's stream is
closed by the `async with` that reads it, in that task. The token takes
effect on the event loop's thread, so from the moment it is set no event of
this turn reaches its observer (the UI, a `TurnObserver`) and no further part
reaches the store: the only write left is the partial reply marked
`interrupted`. Tool calls run in that task too, and so does the wait for the
user's approval of one (`TurnObserver.approve`): a stop cancels that wait, and
the call never runs. The tools' side of that (`ToolRunner`, `Approval`) is in
`chatui.tools.protocol`.

`run()` always returns one outcome: a provider error, an idle stream or a
store that cannot be written (a full disk) make it `failed` with a message,
and a stop the user asked for is `interrupted` even if closing the stream
raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chatui.cancel import CancelToken, current_token, stop_requested, tried_to_exit
from chatui.config import DEFAULT_INTERRUPTED_NOTE
from chatui.context import DoesNotFit, calibrate, fit_history, learn_window
from chatui.history import (
    CANCELLED_TOOL_RESULT,
    ChatMessage,
    build_history,
    unique_id,
)
from chatui.messages import (
    Conversation,
    FinishReason,
    Item,
    ModelResponse,
    ResponseState,
    ThinkingPart,
    Timings,
    ToolCallPart,
    ToolResult,
    Usage,
    UserPrompt,
)
from chatui.providers.base import (
    ContextOverflow,
    ModelRequest,
    PromptProgress,
    Provider,
    ProviderError,
    RedactedThinking,
    RetryWait,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSigned,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    UsageUpdate,
    lifecycle_of,
    request_chars,
)
from chatui.redact import Redactor, current_redactor
from chatui.store import Store
from chatui.stream_redact import StreamRedactor
from chatui.tools.protocol import Approval, ToolProgress, ToolRunner, ToolStatus, deny_all
from chatui.turn_kinds import Continue, NewPrompt, Retry, TurnAsk, last_prompt

FLUSH_INTERVAL = 1.0
STOP_SHOW_WAIT = 0.25  # Seconds a stop's partial reply waits for the UI to draw the stop.
DEFAULT_MAX_STEPS = 10  # Model requests in one turn (config: tools.max_steps).
UNASKED_CANCEL = (
    "The reply was cancelled by something other than you (a library or a tool cancelled "
    "its own work). What arrived is kept; send again to retry."
)


@dataclass(frozen=True)
class ResponseStarted:
    """A model request of this turn began; `response` fills as events arrive."""

    response: ModelResponse


@dataclass(frozen=True)
class ToolStatusChanged:
    """A complete tool call now waits for the user's approval, or runs (with its progress)."""

    call_id: str
    status: ToolStatus
    progress: ToolProgress | None = None


@dataclass(frozen=True)
class ToolResultAdded:
    result: ToolResult


@dataclass(frozen=True)
class ContextTrimmed:
    """The model's view of the conversation now starts at item `view_start` (a prompt).

    None: at its beginning again (the window grew).
    """

    view_start: str | None


@dataclass(frozen=True)
class ContextFill:
    """A request's prompt takes `tokens` of the model's `window`."""

    tokens: int
    window: int


TurnPayload = (
    StreamEvent
    | ResponseStarted
    | ToolStatusChanged
    | ToolResultAdded
    | ContextTrimmed
    | ContextFill
)


@dataclass(frozen=True)
class TurnEvent:
    """An event tagged with the identity of the turn it belongs to."""

    turn_id: int
    payload: TurnPayload


@dataclass
class TurnOutcome:
    """How a turn ended: exactly one of complete, interrupted, failed."""

    turn_id: int
    state: ResponseState
    prompt: UserPrompt
    responses: list[ModelResponse] = field(default_factory=list)
    error: str | None = None
    refused: bool = False  # The prompt could never fit: it was not kept, nothing was sent.


@dataclass
class TurnSettings:
    system_prompt: str = ""
    interrupted_note: str = DEFAULT_INTERRUPTED_NOTE
    idle_timeout: float = 60.0
    secrets: Sequence[str] = ()
    max_steps: int = DEFAULT_MAX_STEPS  # Model requests per turn; the last one's calls don't run.
    interrupted_reply: str = "drop"  # Or "keep": an interrupted reply's text is sent, marked.


class TurnObserver(Protocol):
    """What a turn tells its caller (the chat screen's `TurnView`), and asks of it.

    `on_event` and `approve` are awaited in the task that runs the requests,
    so a stop (`Turn.cancel()`, Esc) cancels them like any other step of the
    turn; `stop_shown` is awaited by `run()` once that task is over.
    """

    async def on_event(self, event: TurnEvent) -> None:
        """Show `event`. Awaited: once a part is stored, it is shown before the turn goes on.

        So the store and the screen stay in step at a stop: from the moment the
        stop takes effect no event reaches the observer, and what was shown is
        what was stored.
        """
        ...

    async def approve(self, call: ToolCallPart) -> Approval:
        """Whether a tool call that needs approval may run (`chatui.tools.protocol.Approver`)."""
        ...

    async def stop_shown(self) -> None:
        """Return once the stop is on screen; awaited after a stop, before the partial is stored.

        For at most `STOP_SHOW_WAIT` seconds, once the requests have ended: the
        UI draws the stop first, the store writes after. If it raises or takes
        longer, the partial reply is stored all the same.
        """
        ...


class QuietObserver:
    """An observer that shows nothing and waits for nothing: a base for callers that want events.

    It asks nobody, so nothing that needs approval runs (`deny_all`).
    """

    async def on_event(self, event: TurnEvent) -> None:
        return None

    async def approve(self, call: ToolCallPart) -> Approval:
        return await deny_all(call)

    async def stop_shown(self) -> None:
        return None


_turn_ids = itertools.count(1)


class StorageError(Exception):
    """The conversation could not be written (a full disk, a deleted conversation)."""


class Turn:
    """One user turn. Create it, keep it where Esc can reach it, then await `run()`.

    The model requests run in a task of the turn's own, which a stop cancels:
    once `run()` has returned, that task is done, so a late `cancel()` touches
    nothing (not the caller's task, not the next turn's).
    """

    def __init__(
        self,
        *,
        conversation: Conversation,
        prompt: str | TurnAsk,
        provider: Provider | Callable[[], Awaitable[Provider]],
        store: Store,
        observer: TurnObserver,
        settings: TurnSettings | None = None,
        tools: ToolRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`prompt`: a new prompt's text, or what else to do (`chatui.turn_kinds`).

        `provider`: the provider, or what gives it once it is made (a session's
        deferred provider): awaited in the turn's task, where a stop reaches it.
        `observer` is shown the turn's events and answers for it (see `TurnObserver`).
        """
        self.id = next(_turn_ids)
        self.token = CancelToken()
        self.conversation = conversation
        self.ask = ask = NewPrompt(prompt) if isinstance(prompt, str) else prompt
        self._continuing = ask.response if isinstance(ask, Continue) else None
        match ask:
            case NewPrompt(text=text, id=prompt_id):
                self.prompt = UserPrompt(text, id=prompt_id)
            case Retry(prompt=retried):
                self.prompt = retried
            case Continue(response=response):
                before = conversation.items[: conversation.items.index(response)]
                self.prompt = last_prompt(before) or UserPrompt("")
        self._path_before = list(conversation.items)  # What a turn that keeps nothing leaves.
        self._reopened: _Reopened | None = None  # A continued reply as it was.
        self._saved: set[str] = set()  # Ids of the items this turn has stored.
        self._unstored: set[str] = set()  # New items whose every write failed.
        self._output_before = 0  # Output tokens a continued reply had before this request.
        self._provider: Provider | None = None
        self._provider_made: Callable[[], Awaitable[Provider]] | None = None
        if callable(provider):
            self._provider_made = provider
        else:
            self._provider = provider
        self.store = store
        self.settings = settings or TurnSettings()
        self.tools = tools
        self.observer = observer
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._started = self._ended = False
        self._responses: list[ModelResponse] = []
        # Per-request bookkeeping, reset by _request().
        self._calls: dict[int, ToolCallPart] = {}
        self._input_chars = 0
        self._got_usage = False
        self._redact = Redactor(self.settings.secrets)
        self._view_start_before = conversation.view_start  # What a refused prompt leaves.
        self.token.on_cancel(self._cancel_task)

    @property
    def provider(self) -> Provider:
        """The provider of the turn's requests (a deferred one: once made, in `run()`)."""
        if self._provider is None:
            raise RuntimeError("the turn's provider is not made yet")
        return self._provider

    @property
    def running(self) -> bool:
        """Whether `run()` has started and not yet returned."""
        return self._started and not self._ended

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def stoppable(self) -> bool:
        """Whether a stop would still change this turn: not asked for, work not over."""
        if self._ended or self.token.requested or self._finished_before_the_end():
            return False
        return self._task is None or not self._task.done()

    def cancel(self) -> bool:
        """Stop this turn (any thread, any number of times). True for the first call."""
        return self.token.cancel()

    def _cancel_task(self) -> None:
        # On the loop's thread once run() has bound the token; before that there is
        # no task, and run() checks the token first.
        if self._task is not None:
            self._task.cancel()  # A no-op once the requests are over.

    async def run(self) -> TurnOutcome:
        """Run the turn to its one outcome. Stores the prompt before anything else.

        A new prompt already in the conversation (a queued message sent twice)
        is complete at once, with no reply: nothing is stored or sent again.
        Never raises but for the caller's own cancellation (the app quitting),
        which stops the turn the way Esc does and is re-raised once the partial
        reply is stored.
        """
        if self._started:
            raise RuntimeError("a turn runs once")
        self._started = True
        self.token.bind(asyncio.get_running_loop())
        outcome = TurnOutcome(self.id, ResponseState.COMPLETE, self.prompt, self._responses)
        outside_cancel = False
        try:
            if self._sent_already():
                return outcome  # Nothing to do: it was answered, or is being answered.
            try:
                self._place_prompt()
            except StorageError as error:
                self._show_path_before()  # Never sent as history unsaved.
                outcome.state, outcome.error = ResponseState.FAILED, str(error)
                return outcome
            if self.token.cancelled:
                outcome.state = ResponseState.INTERRUPTED
                self._keep_nothing_unasked()
                return outcome
            task = self._task = asyncio.create_task(self._request_loop())
            # Awaited directly: a cancel of the caller's task (the app quitting) reaches
            # the requests' task too, and this one goes on once that one has cleaned up.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task  # Its result, error or cancellation is read from it below.
            caller = asyncio.current_task()
            outside_cancel = caller is not None and caller.cancelling() > 0
            if outside_cancel:
                self.token.cancel()  # A stop all the same: interrupted, as with Esc.
            elif self.token.requested and not self._finished_before_the_end():
                outside_cancel = not await self._let_the_stop_show()
            self._finish(outcome, task)
            self._forget_unstored()
            self._keep_nothing_unasked()
        finally:
            self._ended = True
            self.token.unbind()
        if outside_cancel:
            raise asyncio.CancelledError
        return outcome

    def _place_prompt(self) -> None:
        """Put the turn's prompt at the end of the path, and store it (before anything is sent).

        Edit: a new version of the last prompt. Retry: the path ends at the
        prompt again, its reply kept as a version. Continue: nothing moves.
        """
        conversation, ask = self.conversation, self.ask
        if isinstance(ask, NewPrompt):
            if ask.replaces is not None:
                conversation.rewind_to(conversation.parent_of(ask.replaces.id))
            conversation.items.append(self.prompt)
            self._save(self.prompt)
        elif isinstance(ask, Retry):
            conversation.rewind_to(ask.prompt.id)

    def _sent_already(self) -> bool:
        """Whether this new prompt's id is in the conversation: a queued message sent twice.

        Two sends of one queued message can race (Enter and Esc in one read):
        the store keeps its prompt once, and so does the conversation; the
        second turn sends nothing.
        """
        if not isinstance(self.ask, NewPrompt):
            return False
        return any(item.id == self.prompt.id for item in self.conversation.all_items())

    def _show_path_before(self) -> None:
        """The path as it was before the turn (what it placed is forgotten, unless stored)."""
        self.conversation.items[:] = self._path_before

    def _keep_nothing_unasked(self) -> None:
        """A retry that made no reply leaves the path on the old one; a continue with nothing
        new leaves its reply as it was.

        A retry stopped before any of its reply arrived made nothing either: its
        empty reply is not kept as a version, and the old one stays shown.
        """
        if isinstance(self.ask, Retry):
            if not self._responses:
                self._show_path_before()
            elif self.token.requested and self._nothing_answered():
                self._take_back_empty_retry()
        reopened = self._reopened
        if reopened is not None and reopened.response.received == reopened.received:
            reopened.restore()
            with contextlib.suppress(StorageError):
                self._save(reopened.response)

    def _take_back_empty_retry(self) -> None:
        """Forget a retry's reply that holds nothing, and show the path as before, stored too."""
        empty = list(self._responses)
        self._responses.clear()  # The outcome's too: none of them is in the conversation.
        self._show_path_before()
        with contextlib.suppress(sqlite3.Error, OSError, KeyError):  # Then it stays a version.
            for response in empty:
                self.store.delete_item(response.id)
            self.store.set_leaf(self.conversation.id, self.conversation.leaf)

    async def _let_the_stop_show(self) -> bool:
        """Await the observer's `stop_shown`; False if the caller was cancelled meanwhile."""
        try:
            async with asyncio.timeout(STOP_SHOW_WAIT):
                await self.observer.stop_shown()
        except asyncio.CancelledError:
            return False  # Quitting: store the partial reply now, then pass the cancel on.
        except Exception:
            pass  # Drawing failed or took too long: the store must not wait for it.
        return True

    def _finish(self, outcome: TurnOutcome, task: asyncio.Task[None]) -> None:
        """Give the turn its one state from how its requests ended, and store that."""
        error = None if task.cancelled() else task.exception()
        reason: FinishReason
        if isinstance(error, StorageError):
            state, reason = ResponseState.FAILED, "error"
            outcome.error = str(error)
        elif (
            isinstance(error, DoesNotFit)
            and isinstance(self.ask, NewPrompt)
            and self._nothing_answered()
        ):
            outcome.state, outcome.error = ResponseState.FAILED, self._too_long(error)
            outcome.refused = self._unkeep()
            outcome.responses.clear()
            return
        elif self._finished_before_the_end():
            state, reason = ResponseState.COMPLETE, "stop"  # The stop or error came too late.
        elif self.token.requested:
            # A stop the user asked for is interrupted, whatever the cleanup raised.
            state, reason = ResponseState.INTERRUPTED, "cancelled"
        elif task.cancelled():
            # Cancelled from inside (a library, a tool): only the user's stop says "interrupted".
            state, reason = ResponseState.FAILED, "error"
            outcome.error = UNASKED_CANCEL
        elif error is None:
            state, reason = ResponseState.COMPLETE, "stop"
        else:
            state, reason = ResponseState.FAILED, "error"
            outcome.error = self._explain(error)
        outcome.state = state
        if state is ResponseState.COMPLETE:
            return
        try:
            self._end_current(state, reason, outcome.error)
        except StorageError as store_error:
            outcome.state, outcome.error = ResponseState.FAILED, str(store_error)
        if isinstance(error, StorageError) or outcome.state is not state:
            self._mark_unsaved(outcome.error or "")

    def _finished_before_the_end(self) -> bool:
        """Whether the last reply completed and nothing was left to do after it."""
        if not self._responses or self._responses[-1].state is not ResponseState.COMPLETE:
            return False
        calls = [c for c in self._responses[-1].tool_calls if c.complete]
        return not calls or self.tools is None

    def _nothing_answered(self) -> bool:
        """Whether no reply of this turn holds anything (a refusal learned the window)."""
        return len(self._responses) <= 1 and not any(r.parts or r.received for r in self._responses)

    def _too_long(self, error: DoesNotFit) -> str:
        provider, name = lifecycle_of(self.provider), self.provider.name
        raise_window = f" or raise {provider.window_setting}" if provider.window_setting else ""
        if error.limit <= 0:  # The reply's room alone fills the window: no prompt could fit.
            return (
                f"The room kept for the reply ({name}.max_tokens) leaves no room for a prompt "
                f"in {name}'s context window of {error.window} tokens. Lower {name}.max_tokens"
                f"{raise_window} in the config."
            )
        if self._continuing is not None:
            return (
                f"This reply is too long to go on with in {name}'s context window of "
                f"{error.window} tokens. Retry it, or lower {name}.max_tokens{raise_window}."
            )
        first = self._nothing_answered()
        what = "This prompt is" if first else "This turn's tool results are"
        return (
            f"{what} too long for the model: with room for the reply it needs "
            f"{error.tokens + error.window - error.limit} tokens, and {name}'s "
            f"context window holds {error.window}. "
            + (
                f"Shorten it, or lower {name}.max_tokens{raise_window} in the config."
                if first
                else "Send a new prompt to go on without them, or start a new conversation."
            )
        )

    def _unkeep(self) -> bool:
        """Take back a prompt nothing answered, its empty reply and any trim made for it.

        True once unstored: the conversation is then as it was before the turn.
        """
        taken: list[Item] = [self.prompt, *self._responses]
        for item in taken:
            if item in self.conversation.items:
                self.conversation.items.remove(item)
        self.conversation.view_start = self._view_start_before  # Never a prompt not kept.
        self._show_path_before()  # An edited prompt's old version is shown again.
        try:
            for item in reversed(taken):  # Newest first: nothing is left under another.
                self.store.delete_item(item.id)
            self.store.set_view_start(self.conversation.id, self._view_start_before)
            self.store.set_leaf(self.conversation.id, self.conversation.leaf)
        except (sqlite3.Error, OSError, KeyError):
            return False
        return True

    def _explain(self, error: BaseException) -> str:
        if isinstance(error, DoesNotFit):
            return self._too_long(error)
        if isinstance(error, TimeoutError):
            return (
                f"{self.provider.name} sent nothing for {self.settings.idle_timeout:g} s, "
                "so the request was stopped."
            )
        return self._describe(error)

    def _mark_unsaved(self, error: str) -> None:
        """The last response could not be stored: it is failed, in memory too."""
        if self._responses:
            response = self._responses[-1]
            if response.state is not ResponseState.INTERRUPTED:
                response.state, response.finish_reason = ResponseState.FAILED, "error"
            response.error = error

    def _save(self, item: Item) -> None:
        """Store `item`: a new one after the item before it on the path, else in place."""
        conversation = self.conversation  # The parent is looked up in the write: a KeyError
        # (the item is gone from the path) is a failed write, told as one.
        try:
            self._write(
                lambda: self.store.save_item(conversation.id, item, conversation.parent_of(item.id))
            )
        except StorageError:
            if item.id not in self._saved and item is not self._continuing:
                self._unstored.add(item.id)
            raise
        self._saved.add(item.id)
        self._unstored.discard(item.id)

    def _forget_unstored(self) -> None:
        """Take items the store never had off the path (their widgets stay on screen).

        A later item would name one as its parent, a write refused for ever;
        and what is not stored is not sent as history.
        """
        if self._unstored:
            items = self.conversation.items
            items[:] = [item for item in items if item.id not in self._unstored]

    def _write(self, write: Callable[[], None]) -> None:
        """Run a store write; a failure is a `StorageError` in words (a full disk, say)."""
        try:
            write()
        except (sqlite3.Error, OSError, KeyError) as error:  # KeyError: its parent is gone.
            full = isinstance(error, sqlite3.OperationalError) and "full" in str(error)
            full = full or getattr(error, "errno", None) == errno.ENOSPC
            hint = (
                "free some disk space, then send again"
                if full
                else "was it deleted in another chatui?"
            )
            raise StorageError(
                f"The conversation could not be saved ({error}). What is on screen is kept; {hint}"
            ) from None

    def _raise_if_cancelled(self) -> None:
        if self.token.cancelled:
            raise asyncio.CancelledError

    def _describe(self, error: BaseException) -> str:
        text = (
            str(error) if isinstance(error, ProviderError) else f"{type(error).__name__}: {error}"
        )
        return self._redact(text)  # The keys, whole or in part: never stored, shown or sent on.

    async def _emit(self, payload: TurnPayload) -> None:
        self._raise_if_cancelled()
        await self.observer.on_event(TurnEvent(self.id, payload))

    async def _request_loop(self) -> None:
        current_token.set(self.token)  # In this task's context: its tools see it,
        current_redactor.set(self._redact)  # and redact their output before they cut it.
        try:
            await self._requests()
        except (SystemExit, KeyboardInterrupt) as error:  # From a provider (or its thread):
            # left to the task, asyncio would raise it out of the event loop, ending chatui.
            raise ProviderError(tried_to_exit(self.provider.name, error)) from None

    async def _requests(self) -> None:
        if self._provider_made is not None and self._provider is None:
            self._provider = await self._provider_made()
        steps = max(1, self.settings.max_steps)
        for step in range(1, steps + 1):
            response = await self._request()
            calls = [c for c in response.tool_calls if c.complete]
            if not calls or self.tools is None:
                return
            if step == steps:
                break
            await self._run_tools(calls)
        for call in calls:  # Answered, so that the history stays valid; not run.
            self._add_result(ToolResult(call.id, call.name, _step_limit_result(steps), "error"))
        raise ProviderError(
            f"The model was still calling tools after {steps} steps (tools.max_steps), so the "
            "turn was stopped there. Send a message to let it go on."
        )

    async def _request(self) -> ModelResponse:
        self._raise_if_cancelled()  # A stop after the last tool result: nothing more is sent.
        tools = self.tools.specs() if self.tools is not None else []
        continuing = self._continuing if not self._responses else None
        if continuing is not None and not continuing.text.strip():
            continuing = None  # Nothing to go on from: a reply from the start, in its place.
        messages = await self._fitted_history(tools, continuing)
        if self._continuing is not None and not self._responses:
            response = self._reopen(self._continuing)
        else:
            response = ModelResponse(self.provider.name, self.provider.model)
            self.conversation.items.append(response)
            self._output_before = 0
        response.timings = Timings(started=self.clock(), counted_from=response.received)
        self._responses.append(response)
        self._save(response)
        await self._emit(ResponseStarted(response))
        for attempt in (1, 2):
            self._calls, self._got_usage = {}, False
            self._input_chars = request_chars(messages, tools)
            request = ModelRequest(
                messages, self.token, tools, self.conversation.id, continuing=continuing is not None
            )
            try:
                await self._stream(response, request)
            except ContextOverflow as overflow:
                if attempt == 2 or response.parts or response.received:
                    raise
                learn_window(lifecycle_of(self.provider), overflow, request_chars(messages, tools))
                messages = await self._fitted_history(tools, continuing)
            else:
                break
        if self._got_usage and not response.usage.estimated:  # The provider's own count.
            calibrate(lifecycle_of(self.provider), self._input_chars, response.usage.input_tokens)
        return response

    async def _fitted_history(
        self, tools: list[ToolSpec], continuing: ModelResponse | None = None
    ) -> list[ChatMessage]:
        """The history to send: all of it that fits the model's context, with the reply's room.

        `continuing`: the reply this request goes on with, sent last as the model's own.
        """
        conversation, provider = self.conversation, lifecycle_of(self.provider)

        def build(view_start: str | None) -> list[ChatMessage]:
            return build_history(
                conversation.items,
                system_prompt=self.settings.system_prompt,
                interrupted_note=self.settings.interrupted_note,
                view_start=view_start,
                interrupted_reply=self.settings.interrupted_reply,
                continuing=continuing,
            )

        window = provider.context_window
        if window is None:
            return build(conversation.view_start)

        async def count(messages: list[ChatMessage]) -> int:
            return await provider.count_tokens(messages, tools)

        fit = await fit_history(
            conversation.items,
            conversation.view_start,
            build=build,
            count=count,
            window=window,
            reply_room=provider.reply_room,
        )
        self._raise_if_cancelled()
        if fit.view_start != conversation.view_start:
            conversation.view_start = fit.view_start
            self._save_view_start(fit.view_start)
            await self._emit(ContextTrimmed(fit.view_start))
        await self._emit(ContextFill(fit.tokens, window))
        return fit.messages

    def _reopen(self, response: ModelResponse) -> ModelResponse:
        """Make the reply being continued stream again: its text stays, its calls go.

        None of its calls ran (a cut-off one never does); the model goes on from
        its text, and the new text is appended to it.
        """
        self._reopened = _Reopened(response)
        response.parts[:] = [part for part in response.parts if not isinstance(part, ToolCallPart)]
        response.state, response.finish_reason, response.error = ResponseState.STREAMING, None, None
        response.continued += 1
        self._output_before = response.usage.output_tokens
        return response

    def _save_view_start(self, view_start: str | None) -> None:
        self._write(lambda: self.store.set_view_start(self.conversation.id, view_start))

    async def _stream(self, response: ModelResponse, request: ModelRequest) -> None:
        """Read one request's stream into `response`, to its end."""
        keys = StreamRedactor(self._redact)  # A server may echo a key into the reply.
        last_flush = self.clock()
        loop, idle = asyncio.get_running_loop(), self.settings.idle_timeout
        async with (
            self.provider.stream(request) as events,
            asyncio.timeout_at(loop.time() + idle) as deadline,
        ):
            pushed = loop.time()
            async for event in events:
                if isinstance(event, PromptProgress) and event.done < event.total:
                    # The provider is computing, not silent: the next event comes when the
                    # next part of the prompt is done, however long a part takes.
                    deadline.reschedule(None)
                    pushed = -math.inf
                elif isinstance(event, RetryWait):  # Waiting on purpose: not idle.
                    deadline.reschedule(loop.time() + event.seconds + idle)
                    pushed = -math.inf
                elif (now := loop.time()) - pushed > idle / 20:  # Cheap enough per token.
                    deadline.reschedule(now + idle)
                    pushed = now
                for piece in keys(event):  # The event itself, unless it may hold a key.
                    # No await from the check to the observer: a stop (which takes effect on this
                    # thread) cannot come between storing an event and showing it.
                    self._raise_if_cancelled()
                    self._apply(response, piece)
                    await self._emit(piece)
                if isinstance(event, StreamEnd):
                    # Complete the moment its end arrived: closing the stream is cleanup,
                    # and a stop (or an error) during it cannot undo a finished reply.
                    self._end(response, ResponseState.COMPLETE, event.reason)
                    break
                if self.clock() - last_flush >= FLUSH_INTERVAL:
                    last_flush = self.clock()
                    self._save(response)
        if not response.state.ended:
            raise ProviderError(f"{self.provider.name} closed the stream before the reply ended")

    def _apply(self, response: ModelResponse, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta):
            response.received += 1
            now = response.timings.last_token = self.clock()
            if response.timings.first_token is None:
                response.timings.first_token = now
        match event:
            case TextDelta(text=text):
                response.append_text(text)
            case ThinkingDelta(text=text):
                response.append_thinking(text)
            case ThinkingSigned(signature=signature):
                response.append_thinking("").signature = signature
            case RedactedThinking(data=data):
                response.parts.append(ThinkingPart(data=data))
            case ToolCallStart(index=index, id=call_id, name=name):
                call = ToolCallPart(_own_call_id(call_id, self.conversation.items, response), name)
                response.parts.append(call)
                self._calls[index] = call
            case ToolCallDelta(index=index, arguments=arguments):
                self._calls[index].arguments += arguments
            case ToolCallEnd(index=index):
                self._calls[index].complete = True
            case UsageUpdate(input_tokens=input_tokens, output_tokens=output_tokens):
                response.usage = Usage(input_tokens, self._output_before + output_tokens)
                self._got_usage = True
            case StreamEnd(reason=reason):
                response.finish_reason = reason

    async def _run_tools(self, calls: list[ToolCallPart]) -> None:
        """Run the calls of one response concurrently; each result is stored as it comes.

        On a stop, the calls still running are cancelled (a shell command's
        process group is killed by its tool) and get a "cancelled by the user"
        result; the results of those that finished are kept. Only a stop is
        called that: a call that raises a cancellation of its own (no stop
        was asked for, its task is not being cancelled), or a `SystemExit`,
        gets an error result, and the turn goes on. A `SystemExit` or
        `KeyboardInterrupt` left to a task would end the event loop, and
        chatui with it.
        """
        assert self.tools is not None
        tools, answered = self.tools, set[int]()

        async def run_one(n: int, call: ToolCallPart) -> None:
            async def report(status: ToolStatus, progress: ToolProgress | None = None) -> None:
                await self._emit(ToolStatusChanged(call.id, status, progress))

            try:
                result = await tools.run(call, self.observer.approve, report)
            except Exception as error:  # A runner's bug: the model hears of it, the turn goes on.
                result = ToolResult(call.id, call.name, f"The tool failed: {error}", "error")
            except asyncio.CancelledError:
                if stop_requested():
                    raise
                text = f"{call.name} was cancelled by something other than the user; no result."
                result = ToolResult(call.id, call.name, text, "error")
            except BaseException as error:  # SystemExit, KeyboardInterrupt: the tool's own.
                result = ToolResult(call.id, call.name, tried_to_exit(call.name, error), "error")
            self._add_result(result)
            answered.add(n)
            await self._emit(ToolResultAdded(result))

        try:
            async with asyncio.TaskGroup() as group:
                for n, call in enumerate(calls):
                    group.create_task(run_one(n, call))
        except BaseExceptionGroup as errors:  # A store that failed: the first error says it.
            raise errors.exceptions[0] from None
        finally:
            by_the_user = stop_requested()  # Else another call's failure (the store) ended these.
            unfinished = "Stopped before it finished: another call of this reply failed."
            for n, call in enumerate(calls):
                if n not in answered:
                    self._add_result(
                        ToolResult(call.id, call.name, CANCELLED_TOOL_RESULT, "cancelled")
                        if by_the_user
                        else ToolResult(call.id, call.name, unfinished, "error")
                    )

    def _add_result(self, result: ToolResult) -> None:
        result.content = self._redact(result.content)  # A file or a command may hold a key.
        self.conversation.items.append(result)
        try:
            self._save(result)
        except StorageError:
            self.conversation.items.remove(result)  # Nothing comes after what is not stored.
            raise

    def _end_current(
        self, state: ResponseState, reason: FinishReason, error: str | None = None
    ) -> None:
        if self._responses and not self._responses[-1].state.ended:
            self._end(self._responses[-1], state, reason, error)

    def _end(
        self,
        response: ModelResponse,
        state: ResponseState,
        reason: FinishReason,
        error: str | None = None,
    ) -> None:
        """Give `response` its final state, usage (estimated if need be), and store it."""
        response.state = state
        response.finish_reason = reason
        response.error = error
        response.timings.ended = self.clock()
        usage = response.usage
        if not self._got_usage:
            response.usage = Usage(self._input_chars // 4, response.received, estimated=True)
        elif usage.output_tokens < response.received:
            response.usage = Usage(usage.input_tokens, response.received, estimated=True)
        self._save(response)


def _own_call_id(offered: str, items: Sequence[Item], response: ModelResponse) -> str:
    """The id of a call starting in `response`: `offered` (the provider's) if it is new.

    Results are stored, shown and sent back under their call's id, so an id
    must name one call in the whole conversation (`items`, which hold
    `response`). Compatible servers omit ids (the provider then names every
    reply's first call `call_0`) or repeat them; such a call gets
    `call_<response number>_<call number>`, which both APIs accept, with a
    suffix if even that was taken.
    """
    used = {c.id for item in items if isinstance(item, ModelResponse) for c in item.tool_calls}
    used.update(item.call_id for item in items if isinstance(item, ToolResult))
    if offered and offered not in used:
        return offered
    number = sum(isinstance(item, ModelResponse) for item in items)
    return unique_id(f"call_{number}_{len(response.tool_calls)}", used)


def _step_limit_result(steps: int) -> str:
    return f"Not run: the turn reached its limit of {steps} model requests (tools.max_steps)."


class _Reopened:
    """A reply as it was before Continue reopened it: put back if nothing new arrives."""

    def __init__(self, response: ModelResponse) -> None:
        self.response = response
        self.received = response.received
        self._parts = list(response.parts)
        self._ending = (response.state, response.finish_reason, response.error)
        self._usage, self._timings, self._continued = (
            response.usage,
            response.timings,
            response.continued,
        )

    def restore(self) -> None:
        response = self.response
        response.parts[:] = self._parts
        response.state, response.finish_reason, response.error = self._ending
        response.usage, response.timings, response.continued = (
            self._usage,
            self._timings,
            self._continued,
        )
