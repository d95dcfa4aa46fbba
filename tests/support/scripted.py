"""A scripted provider: a test double that streams given events.

It yields a script of events at a set pace, can stall forever or wait at a
`Gate` until the test opens it (at a point of the script), can raise, and
records whether and when its stream was closed.
`busy=True` yields without ever suspending, like a provider that keeps
producing no matter what: the turn runner must still drop everything after a
stop. Each call to `stream()` takes the next script, so a turn with tool calls
can be scripted request by request. Its lifecycle steps (prepare,
conversation_left, close) are recorded in `lifecycle`, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from chatui.history import ChatMessage
from chatui.providers.base import (
    ModelRequest,
    Progress,
    ProviderLifecycle,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    UsageUpdate,
    estimate_tokens,
)

STALL = "stall"
RAISE = "raise"


@dataclass
class Gate:
    """A step that holds the stream until the test opens it: a silence the test ends."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


Step = StreamEvent | Gate | str


def words(text: str, *, end: str | None = "stop", usage: tuple[int, int] | None = None) -> list:
    """A script streaming `text` word by word (keeping spaces), then ending."""
    pieces = [w for w in text.replace(" ", " \0").split("\0") if w]
    script: list[Step] = [TextDelta(p) for p in pieces]
    if usage is not None:
        script.append(UsageUpdate(*usage))
    if end is not None:
        script.append(StreamEnd(end))  # type: ignore[arg-type]
    return script


def tool_call(index: int, call_id: str, name: str, arguments: Sequence[str], *, end: bool = True):
    """Script steps for one streamed tool call."""
    steps: list[Step] = [ToolCallStart(index, call_id, name)]
    steps += [ToolCallDelta(index, a) for a in arguments]
    if end:
        steps.append(ToolCallEnd(index))
    return steps


@dataclass
class StreamRecord:
    """What happened to one `stream()` call."""

    request: ModelRequest
    started_cancelled: bool
    yielded: int = 0
    closed: bool = False
    closed_at: float | None = None
    stalled: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedProvider(ProviderLifecycle):
    """A provider double; see the module docstring."""

    name = "scripted"

    def __init__(
        self,
        *scripts: Iterable[Step],
        pace: float = 0.0,
        busy: bool = False,
        error: BaseException | None = None,
        model: str = "script-1",
    ) -> None:
        self.model = model
        self._scripts = [list(s) for s in scripts]
        self.pace = pace
        self.busy = busy
        self.error = error or RuntimeError("the scripted stream broke")
        self.records: list[StreamRecord] = []
        self.started = asyncio.Event()
        self.lifecycle: list[str] = []

    async def prepare(self, progress: Progress = lambda _: None) -> None:
        self.lifecycle.append("prepare")

    async def conversation_left(self) -> None:
        self.lifecycle.append("conversation_left")

    async def close(self) -> None:
        self.lifecycle.append("close")

    @property
    def last(self) -> StreamRecord:
        return self.records[-1]

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        script = self._scripts.pop(0) if self._scripts else []
        record = StreamRecord(request, started_cancelled=request.cancel.cancelled)
        self.records.append(record)
        self.started.set()
        events = self._events(script, record)
        try:
            yield events
        finally:
            await events.aclose()
            record.closed, record.closed_at = True, time.monotonic()

    async def _events(self, script: list[Step], record: StreamRecord) -> AsyncIterator[StreamEvent]:
        if record.started_cancelled:
            return  # A provider that starts on a cancelled token stops at once.
        for step in script:
            if isinstance(step, Gate):
                step.reached.set()
                await step.opened.wait()
            elif step == STALL:
                record.stalled.set()
                await asyncio.Event().wait()  # Forever, until cancelled.
            elif step == RAISE:
                raise self.error
            else:
                if self.pace and not self.busy:
                    await asyncio.sleep(self.pace)
                elif not self.busy:
                    await asyncio.sleep(0)
                record.yielded += 1
                yield step  # type: ignore[misc]


def calls(*specs: tuple[str, str, str]) -> list:
    """One reply calling (id, name, arguments) each, then ending for tool calls."""
    steps: list = []
    for n, (call_id, name, arguments) in enumerate(specs):
        steps += tool_call(n, call_id, name, [arguments])
    return [*steps, StreamEnd("tool_calls")]


class WindowedProvider(ScriptedProvider):
    """The scripted provider with a context window, counting a token per 4 characters."""

    def __init__(self, window: int, reply: int) -> None:
        super().__init__()
        self._window, self._reply = window, reply

    def play(self, script: list[Step]) -> None:
        self._scripts.append(list(script))

    @property
    def context_window(self) -> int:
        return self._window

    @property
    def reply_room(self) -> int:
        return self._reply

    def counted(self, messages: Sequence[ChatMessage]) -> int:
        return estimate_tokens(messages, [], 4.0)

    async def count_tokens(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> int:
        return self.counted(messages)
