"""Running a turn outside the app: an observer that records what reached the "UI", and helpers.

`make_turn` builds a `Turn` whose observer is a `Sink`; `run_turn` runs one to
its end (optionally stopping it after a number of text pieces), the way the
app would, with nothing on screen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from chatui.messages import Conversation, ToolCallPart, ToolResult
from chatui.providers.base import Provider, TextDelta, ToolSpec
from chatui.store import Store
from chatui.tools.protocol import Approval, Approver, ToolReport, ToolRunner, deny_all
from chatui.turn import QuietObserver, Turn, TurnEvent, TurnOutcome, TurnSettings
from chatui.turn_kinds import TurnAsk


class Sink(QuietObserver):
    """The turn's observer: records what reached the "UI", and whether the turn was stopped then.

    `stop_after=N` stops the turn (`turn`, once set) as its N-th text piece
    arrives; `react(event)` is called with each event. Tool calls that need
    approval are answered by `approve` (default: denied), and after a stop
    `stop_shown` is awaited as the screen's drawing of the stop would be.
    """

    def __init__(
        self,
        *,
        approve: Approver = deny_all,
        stop_shown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.events: list[TurnEvent] = []
        self.after_stop = 0
        self.turn: Turn | None = None
        self.react: Callable[[TurnEvent], object] | None = None
        self.stop_after: int | None = None
        self.approver = approve
        self.showing_stop = stop_shown

    async def on_event(self, event: TurnEvent) -> None:
        if self.turn is not None and self.turn.token.cancelled:
            self.after_stop += 1
        self.events.append(event)
        if self.react is not None:
            self.react(event)
        if self.stop_after is not None and len(self.texts) >= self.stop_after:
            assert self.turn is not None
            self.turn.cancel()
        await asyncio.sleep(0)

    async def approve(self, call: ToolCallPart) -> Approval:
        return await self.approver(call)

    async def stop_shown(self) -> None:
        if self.showing_stop is not None:
            await self.showing_stop()

    @property
    def texts(self) -> list[str]:
        return [e.payload.text for e in self.events if isinstance(e.payload, TextDelta)]


def make_turn(
    store: Store,
    provider: Provider,
    *,
    conversation: Conversation | None = None,
    settings: TurnSettings | None = None,
    tools: ToolRunner | None = None,
    prompt: str | TurnAsk = "hi",
    approve: Approver = deny_all,
) -> tuple[Turn, Sink]:
    """A turn of `prompt` in `conversation` (a new one by default), not started.

    `prompt`: a new prompt's text, or another ask (`chatui.turn_kinds`: continue, retry...).

    `approve` answers the tool calls that need approval (default: denied).
    """
    conversation = conversation or store.create_conversation()
    sink = Sink(approve=approve)
    turn = Turn(
        conversation=conversation,
        prompt=prompt,
        provider=provider,
        store=store,
        observer=sink,
        settings=settings,
        tools=tools,
    )
    sink.turn = turn
    return turn, sink


BRIEF = TurnSettings(system_prompt="Be brief.", idle_timeout=60.0)
"""The settings `run_turn` uses unless told otherwise."""


async def run_turn(
    provider: Provider,
    store: Store,
    conversation: Conversation,
    prompt: str,
    *,
    stop_after: int | None = None,
    settings: TurnSettings = BRIEF,
) -> tuple[TurnOutcome, Sink]:
    """Run a turn to its end; `stop_after=N` stops it at its N-th text piece."""
    turn, sink = make_turn(
        store, provider, conversation=conversation, settings=settings, prompt=prompt
    )
    sink.stop_after = stop_after
    return await turn.run(), sink


def stored(store: Store, turn: Turn) -> list:  # type: ignore[type-arg]
    """The turn's conversation as the store holds it now."""
    return store.load_conversation(turn.conversation.id).items


class RecordingTools:
    """A tool runner double: `echo` answers, `wait` blocks until cancelled, `boom` raises."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.cancelled: list[str] = []
        self.blocked = asyncio.Event()

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec("echo", "echo"), ToolSpec("wait", "wait")]

    async def run(self, call: ToolCallPart, approve: Approver, report: ToolReport) -> ToolResult:
        self.ran.append(call.id)
        if call.name == "wait":
            self.blocked.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(call.id)
                raise
        if call.name == "boom":
            raise RuntimeError("tool exploded")
        return ToolResult(call.id, call.name, f"echo {call.arguments}")
