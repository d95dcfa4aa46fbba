"""Run one user turn: the request/tool loop, the cancel token, the typed outcome.

A `Turn` owns a `CancelToken` that exists before any provider work starts.
`Turn.cancel()` (Esc, or the app quitting) sets the token and cancels the task
running `Turn.run()`; the provider's stream is closed by the `async with` that
reads it, in that same task. From the moment the token is set, no event of
this turn reaches the sink (the UI) and no further part reaches the store:
the only write left is the partial reply marked `interrupted`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chatui.cancel import CancelToken
from chatui.history import CANCELLED_TOOL_RESULT, DEFAULT_INTERRUPTED_NOTE, build_history
from chatui.messages import (
    Conversation,
    ModelResponse,
    ResponseState,
    ToolCallPart,
    ToolResult,
    Usage,
    UserPrompt,
)
from chatui.providers.base import (
    ModelRequest,
    Provider,
    ProviderError,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    UsageUpdate,
)
from chatui.store import Store

FLUSH_INTERVAL = 1.0
MAX_REQUESTS_PER_TURN = 25


@dataclass(frozen=True)
class ResponseStarted:
    """A model request of this turn began; `response` fills as events arrive."""

    response: ModelResponse


@dataclass(frozen=True)
class ToolResultAdded:
    result: ToolResult


TurnPayload = StreamEvent | ResponseStarted | ToolResultAdded


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


@dataclass
class TurnSettings:
    system_prompt: str = ""
    interrupted_note: str = DEFAULT_INTERRUPTED_NOTE
    idle_timeout: float = 60.0
    secrets: Sequence[str] = ()


class ToolRunner(Protocol):
    """Runs the model's tool calls (the tools issue provides the real one)."""

    def specs(self) -> list[ToolSpec]: ...

    async def run(self, call: ToolCallPart) -> ToolResult: ...


Sink = Callable[[TurnEvent], Awaitable[None]]

_turn_ids = itertools.count(1)


class Turn:
    """One user turn. Create it, keep it where Esc can reach it, then await `run()`."""

    def __init__(
        self,
        *,
        conversation: Conversation,
        prompt: str,
        provider: Provider,
        store: Store,
        sink: Sink,
        settings: TurnSettings | None = None,
        tools: ToolRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = next(_turn_ids)
        self.token = CancelToken()
        self.conversation = conversation
        self.prompt = UserPrompt(prompt)
        self.provider = provider
        self.store = store
        self.settings = settings or TurnSettings()
        self.tools = tools
        self.clock = clock
        self._sink = sink
        self._task: asyncio.Task[TurnOutcome] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._responses: list[ModelResponse] = []
        # Per-request bookkeeping, reset by _request().
        self._calls: dict[int, ToolCallPart] = {}
        self._input_chars = 0
        self._got_usage = False
        self._ending = False
        self.token.on_cancel(self._cancel_task)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def cancel(self) -> bool:
        """Stop this turn (any thread, any number of times). True for the first call."""
        return self.token.cancel()

    def _cancel_task(self) -> None:
        task, loop = self._task, self._loop
        if task is None or loop is None or self._ending:
            return  # Not started (run() checks the token first), or already ending.
        if threading.get_ident() == self._loop_thread:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    async def run(self) -> TurnOutcome:
        """Run the turn to its one outcome. Stores the prompt before anything else."""
        task = asyncio.current_task()
        assert task is not None
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._task = task
        self.conversation.items.append(self.prompt)
        self.store.save_item(self.conversation.id, self.prompt)
        outcome = TurnOutcome(self.id, ResponseState.COMPLETE, self.prompt, self._responses)
        try:
            self._raise_if_cancelled()
            await self._request_loop()
        except asyncio.CancelledError:
            self._ending = True
            ours = not self.token.cancel()  # Sets the token if the cancel came from outside.
            self._end_current(ResponseState.INTERRUPTED, "cancelled")
            outcome.state = ResponseState.INTERRUPTED
            if not ours:
                raise
            if task.cancelling():
                task.uncancel()
        except TimeoutError:
            outcome.error = (
                f"{self.provider.name} sent nothing for {self.settings.idle_timeout:g} s, "
                "so the request was stopped."
            )
            self._fail(outcome)
        except Exception as error:  # A provider or tool failure becomes a failed outcome.
            outcome.error = self._describe(error)
            self._fail(outcome)
        return outcome

    def _raise_if_cancelled(self) -> None:
        if self.token.cancelled:
            raise asyncio.CancelledError

    def _fail(self, outcome: TurnOutcome) -> None:
        self._ending = True
        self.token.cancel()  # Nothing of this turn may render after it ended.
        self._end_current(ResponseState.FAILED, "error", outcome.error)
        outcome.state = ResponseState.FAILED

    def _describe(self, error: Exception) -> str:
        text = (
            str(error) if isinstance(error, ProviderError) else f"{type(error).__name__}: {error}"
        )
        for secret in self.settings.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _emit(self, payload: TurnPayload) -> None:
        self._raise_if_cancelled()
        await self._sink(TurnEvent(self.id, payload))

    async def _request_loop(self) -> None:
        for _ in range(MAX_REQUESTS_PER_TURN):
            response = await self._request()
            calls = [c for c in response.tool_calls if c.complete]
            if not calls or self.tools is None:
                return
            await self._run_tools(calls)
        raise ProviderError(f"stopped after {MAX_REQUESTS_PER_TURN} model requests in one turn")

    async def _request(self) -> ModelResponse:
        messages = build_history(
            self.conversation.items,
            system_prompt=self.settings.system_prompt,
            interrupted_note=self.settings.interrupted_note,
        )
        tools = self.tools.specs() if self.tools is not None else []
        response = ModelResponse(self.provider.name, self.provider.model)
        response.timings.started = self.clock()
        self._responses.append(response)
        self._calls, self._got_usage = {}, False
        self._input_chars = sum(len(m.content) for m in messages)
        self.conversation.items.append(response)
        self.store.save_item(self.conversation.id, response)
        await self._emit(ResponseStarted(response))

        request = ModelRequest(messages, self.token, tools, self.conversation.id)
        last_flush = self.clock()
        loop, idle = asyncio.get_running_loop(), self.settings.idle_timeout
        async with (
            self.provider.stream(request) as events,
            asyncio.timeout_at(loop.time() + idle) as deadline,
        ):
            pushed = loop.time()
            async for event in events:
                if (now := loop.time()) - pushed > idle / 20:  # Cheap enough per token.
                    deadline.reschedule(now + idle)
                    pushed = now
                self._raise_if_cancelled()
                self._apply(response, event)
                await self._emit(event)
                if isinstance(event, StreamEnd):
                    break
                if self.clock() - last_flush >= FLUSH_INTERVAL:
                    last_flush = self.clock()
                    self.store.save_item(self.conversation.id, response)
        if response.finish_reason is None:
            raise ProviderError(f"{self.provider.name} closed the stream before the reply ended")
        self._end(response, ResponseState.COMPLETE, response.finish_reason)
        return response

    def _apply(self, response: ModelResponse, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ToolCallStart | ToolCallDelta):
            response.received += 1
            now = response.timings.last_token = self.clock()
            if response.timings.first_token is None:
                response.timings.first_token = now
        match event:
            case TextDelta(text=text):
                response.append_text(text)
            case ToolCallStart(index=index, id=call_id, name=name):
                call = ToolCallPart(call_id, name)
                response.parts.append(call)
                self._calls[index] = call
            case ToolCallDelta(index=index, arguments=arguments):
                self._calls[index].arguments += arguments
            case ToolCallEnd(index=index):
                self._calls[index].complete = True
            case UsageUpdate(input_tokens=input_tokens, output_tokens=output_tokens):
                response.usage = Usage(input_tokens, output_tokens)
                self._got_usage = True
            case StreamEnd(reason=reason):
                response.finish_reason = reason

    async def _run_tools(self, calls: list[ToolCallPart]) -> None:
        assert self.tools is not None
        pending = list(calls)
        try:
            while pending:
                call = pending[0]
                try:
                    result = await self.tools.run(call)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    result = ToolResult(call.id, call.name, f"The tool failed: {error}", "error")
                pending.pop(0)
                self._add_result(result)
                await self._emit(ToolResultAdded(result))
        finally:
            if self.token.cancelled or pending:
                for call in pending:
                    self._add_result(
                        ToolResult(call.id, call.name, CANCELLED_TOOL_RESULT, "cancelled")
                    )

    def _add_result(self, result: ToolResult) -> None:
        self.conversation.items.append(result)
        self.store.save_item(self.conversation.id, result)

    def _end_current(self, state: ResponseState, reason: str, error: str | None = None) -> None:
        if self._responses and not self._responses[-1].state.ended:
            self._end(self._responses[-1], state, reason, error)  # type: ignore[arg-type]

    def _end(
        self,
        response: ModelResponse,
        state: ResponseState,
        reason: str,
        error: str | None = None,
    ) -> None:
        """Give `response` its final state, usage (estimated if need be), and store it."""
        response.state = state
        response.finish_reason = reason  # type: ignore[assignment]
        response.error = error
        response.timings.ended = self.clock()
        usage = response.usage
        if not self._got_usage:
            response.usage = Usage(self._input_chars // 4, response.received, estimated=True)
        elif usage.output_tokens < response.received:
            response.usage = Usage(usage.input_tokens, response.received, estimated=True)
        self.store.save_item(self.conversation.id, response)
