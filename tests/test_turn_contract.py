"""Edges of the turn runner's contract: late cancels, full disks, failing cleanups, threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from chatui.messages import ModelResponse, ResponseState, ToolCallPart, UserPrompt
from chatui.providers.base import (
    ModelRequest,
    PromptProgress,
    StreamEnd,
    StreamEvent,
    TextDelta,
)
from chatui.store import Store
from chatui.tools.protocol import Approval
from chatui.tools.registry import Tool, ToolRegistry
from chatui.turn import Turn, TurnEvent, TurnSettings
from tests.support.clocks import LoopClock
from tests.support.scripted import RAISE, STALL, ScriptedProvider, calls, words
from tests.support.turns import Sink, make_turn, run_turn, stored


async def test_a_late_cancel_of_a_finished_turn_cancels_nothing(store: Store) -> None:
    first, _ = make_turn(store, ScriptedProvider(words("one")))
    assert (await first.run()).state is ResponseState.COMPLETE

    assert first.cancel()  # Esc as the reply ends: the turn is already over.
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # The caller's own task goes on...

    second, _ = make_turn(store, ScriptedProvider(words("two")), conversation=first.conversation)
    outcome = await second.run()  # ...and so does the next turn, run by the same task.

    assert outcome.state is ResponseState.COMPLETE
    assert not first.stoppable and first.ended
    assert [i.state for i in stored(store, first) if isinstance(i, ModelResponse)] == [
        ResponseState.COMPLETE,
        ResponseState.COMPLETE,
    ]


async def test_a_cancel_from_another_thread_after_the_turn_ended_is_a_no_op(
    store: Store,
) -> None:
    turn, _ = make_turn(store, ScriptedProvider(words("done")))
    await turn.run()

    thread = threading.Thread(target=turn.cancel)
    thread.start()
    thread.join()
    for _ in range(3):
        await asyncio.sleep(0)

    assert stored(store, turn)[-1].state is ResponseState.COMPLETE


def _fill_the_disk(store: Store) -> None:
    """From now on the database cannot grow: SQLite's own 'database or disk is full'."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


async def test_a_full_disk_mid_reply_fails_the_turn_with_the_partial_kept(store: Store) -> None:
    chunk = "x" * 3000  # Each flush needs new pages.
    provider = ScriptedProvider([TextDelta(chunk) for _ in range(40)] + [StreamEnd("stop")])
    conversation = store.create_conversation()
    sink = Sink()
    ticks = iter(range(100_000))
    turn = Turn(
        conversation=conversation,
        prompt="write a lot",
        provider=provider,
        store=store,
        observer=sink,
        clock=lambda: next(ticks) * 2.0,  # Every token is a flush.
    )
    sink.turn = turn
    sink.react = lambda event: len(sink.texts) == 3 and _fill_the_disk(store)

    outcome = await turn.run()  # Returns: a storage failure never escapes.

    assert outcome.state is ResponseState.FAILED
    assert "could not be saved" in (outcome.error or "")
    assert "full" in (outcome.error or "") and "free some disk space" in (outcome.error or "")
    (response,) = outcome.responses
    assert response.state is ResponseState.FAILED and response.error == outcome.error
    assert response.text.startswith(chunk * 3)  # The partial reply is kept in memory.
    assert provider.last.closed
    assert stored(store, turn)[0].text == "write a lot"  # Written before the disk filled.


async def test_a_prompt_that_cannot_be_stored_fails_before_any_request(store: Store) -> None:
    conversation = store.create_conversation()
    _fill_the_disk(store)
    provider = ScriptedProvider(words("never"))
    turn, sink = make_turn(store, provider, conversation=conversation, prompt="y" * 20_000)

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "could not be saved" in (outcome.error or "")
    assert provider.records == [] and sink.events == []


async def test_a_deleted_conversation_fails_the_turn_instead_of_raising(store: Store) -> None:
    provider = ScriptedProvider([*words("half ", end=None), STALL])
    turn, _ = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await asyncio.wait_for(provider.started.wait(), 10)
    await asyncio.wait_for(provider.last.stalled.wait(), 10)

    store.delete_conversation(turn.conversation.id)  # Another window deleted it.
    turn.cancel()
    outcome = await task

    assert outcome.state is ResponseState.FAILED
    assert "could not be saved" in (outcome.error or "")
    assert "deleted in another chatui" in (outcome.error or "")
    assert outcome.responses[0].text == "half "


class ClosingFails:
    """A provider whose stream raises while it is being closed (a reset connection)."""

    name, model = "flaky", "f-1"

    def __init__(self) -> None:
        self.stalled = asyncio.Event()

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async def events() -> AsyncIterator[StreamEvent]:
            yield TextDelta("partial")
            self.stalled.set()
            await asyncio.Event().wait()

        try:
            yield events()
        finally:
            raise ConnectionResetError("connection reset by peer")


async def test_a_stop_is_interrupted_even_if_closing_the_stream_raises(store: Store) -> None:
    provider = ClosingFails()
    turn, _ = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await provider.stalled.wait()

    turn.cancel()
    outcome = await task

    assert outcome.state is ResponseState.INTERRUPTED
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.state is ResponseState.INTERRUPTED and response.text == "partial"


async def test_screen_and_store_agree_whichever_thread_cancels(store: Store) -> None:
    rng = random.Random(7)
    for _ in range(30):
        tokens = [TextDelta(f"{i},") for i in range(3000)]
        provider = ScriptedProvider([*tokens, STALL], busy=True)
        turn, sink = make_turn(store, provider)
        at = rng.randrange(5, 400)
        reached = threading.Event()
        sink.react = lambda _, sink=sink, at=at, reached=reached: (
            len(sink.events) >= at and reached.set()
        )

        def esc_from_thread(turn: Turn, reached: threading.Event, delay: float) -> None:
            reached.wait(10)
            threading.Event().wait(delay)  # A random moment after the at-th event.
            turn.cancel()

        thread = threading.Thread(target=esc_from_thread, args=(turn, reached, rng.random() / 1000))
        thread.start()
        outcome = await turn.run()
        thread.join()

        assert outcome.state is ResponseState.INTERRUPTED
        assert sink.after_stop == 0  # Nothing reached the 'UI' once the stop took effect.
        (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
        assert response.text == "".join(sink.texts)
        assert response.text == outcome.responses[0].text


class Prefill:
    """A provider that reports prompt progress, each part taking ten idle timeouts."""

    name, model = "prefill", "p-1"

    def __init__(self, clock: LoopClock, seconds_per_part: float) -> None:
        self.clock, self.seconds_per_part = clock, seconds_per_part

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async def events() -> AsyncIterator[StreamEvent]:
            for done in (0, 128, 256):
                yield PromptProgress(done, 300)
                await self.clock.advance(self.seconds_per_part)  # One slow micro-batch.
            yield PromptProgress(300, 300)
            yield TextDelta("ready")
            yield StreamEnd("stop")

        yield events()


async def test_prompt_processing_that_makes_progress_is_not_an_idle_stream(store: Store) -> None:
    provider = Prefill(LoopClock(), seconds_per_part=600)
    turn, sink = make_turn(store, provider, settings=TurnSettings(idle_timeout=60))

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert sink.texts == ["ready"]
    progress = [e.payload.done for e in sink.events if isinstance(e.payload, PromptProgress)]
    assert progress == [0, 128, 256, 300]


async def test_silence_after_the_prompt_is_processed_still_times_out(store: Store) -> None:
    clock = LoopClock()
    provider = ScriptedProvider([PromptProgress(0, 10), PromptProgress(10, 10), STALL])
    turn, _ = make_turn(store, provider, settings=TurnSettings(idle_timeout=60))
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    await clock.advance(61)  # A minute of silence once the prompt is processed.
    outcome = await asyncio.wait_for(task, 10)

    assert outcome.state is ResponseState.FAILED
    assert "sent nothing for 60 s" in (outcome.error or "")


async def test_a_turn_runs_once(store: Store) -> None:
    turn, _ = make_turn(store, ScriptedProvider(words("ok")))
    await turn.run()
    with pytest.raises(RuntimeError):
        await turn.run()
    assert [i for i in stored(store, turn) if isinstance(i, UserPrompt)] == [turn.prompt]


def test_sqlite_error_class_is_what_a_full_disk_raises(store: Store) -> None:
    conversation = store.create_conversation()
    _fill_the_disk(store)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.save_item(conversation.id, UserPrompt("z" * 50_000))


class SlowToClose:
    """A provider that sends a whole reply, then takes its time closing (like a local job)."""

    name, model = "slow-close", "s-1"

    def __init__(self, *, close_error: Exception | None = None) -> None:
        self.closing = asyncio.Event()
        self.release = asyncio.Event()
        self.close_error = close_error

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async def events() -> AsyncIterator[StreamEvent]:
            yield TextDelta("a complete answer")
            yield StreamEnd("stop")

        try:
            yield events()
        finally:
            self.closing.set()
            await self.release.wait()
            if self.close_error is not None:
                raise self.close_error


async def test_a_stop_after_the_reply_ended_leaves_it_complete(store: Store) -> None:
    provider = SlowToClose()
    turn, _ = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await provider.closing.wait()

    assert not turn.stoppable  # The reply is over: Esc has nothing left to stop.
    turn.cancel()
    provider.release.set()
    outcome = await task

    assert outcome.state is ResponseState.COMPLETE
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.state is ResponseState.COMPLETE and response.finish_reason == "stop"


async def test_a_cleanup_error_after_a_complete_reply_leaves_it_complete(store: Store) -> None:
    provider = SlowToClose(close_error=ConnectionResetError("reset while closing"))
    provider.release.set()
    turn, _ = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert stored(store, turn)[-1].state is ResponseState.COMPLETE


async def test_a_prompt_that_could_not_be_stored_is_never_sent_later(store: Store) -> None:
    conversation = store.create_conversation()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    _fill_the_disk(store)
    failed, _ = make_turn(store, ScriptedProvider(), conversation=conversation, prompt="z" * 9000)
    assert (await failed.run()).state is ResponseState.FAILED
    store._db.execute(f"PRAGMA max_page_count = {pages + 1000}")  # Space again.

    provider = ScriptedProvider(words("ok"))
    turn, _ = make_turn(store, provider, conversation=conversation, prompt="second")
    await turn.run()

    assert [m.content for m in provider.last.request.messages] == ["second"]


def _stopping_turn(store: Store, stop_shown) -> tuple[Turn, ScriptedProvider]:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    sink = Sink(stop_shown=stop_shown)
    turn = sink.turn = Turn(
        conversation=store.create_conversation(),
        prompt="go",
        provider=provider,
        store=store,
        observer=sink,
    )
    return turn, provider


def _stored_states(store: Store, turn: Turn) -> list[ResponseState]:
    return [i.state for i in stored(store, turn) if isinstance(i, ModelResponse)]


async def test_a_stop_stores_the_partial_reply_only_once_the_stop_is_shown(
    store: Store,
) -> None:
    seen: list[list[ResponseState]] = []

    async def stop_shown() -> None:
        seen.append(_stored_states(store, turn))

    turn, provider = _stopping_turn(store, stop_shown)
    running = asyncio.create_task(turn.run())
    await asyncio.wait_for(provider.started.wait(), 10)
    await asyncio.wait_for(provider.last.stalled.wait(), 10)
    turn.cancel()
    outcome = await running

    assert outcome.state is ResponseState.INTERRUPTED
    assert seen == [[ResponseState.STREAMING]]  # Not yet stored as interrupted.
    assert _stored_states(store, turn) == [ResponseState.INTERRUPTED]


@pytest.mark.parametrize("hook", ["hangs", "raises"])
async def test_a_stop_shown_that_hangs_or_raises_never_keeps_the_reply_unstored(
    store: Store, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    monkeypatch.setattr("chatui.turn.STOP_SHOW_WAIT", 0.05)
    never = asyncio.Event()

    async def stop_shown() -> None:
        if hook == "raises":
            raise RuntimeError("the screen is gone")
        await never.wait()

    turn, provider = _stopping_turn(store, stop_shown)
    running = asyncio.create_task(turn.run())
    await asyncio.wait_for(provider.started.wait(), 10)
    await asyncio.wait_for(provider.last.stalled.wait(), 10)
    turn.cancel()

    assert (await running).state is ResponseState.INTERRUPTED
    assert _stored_states(store, turn) == [ResponseState.INTERRUPTED]


async def test_quitting_while_the_stop_is_drawn_still_stores_the_partial_reply(
    store: Store,
) -> None:
    waiting = asyncio.Event()

    async def stop_shown() -> None:
        waiting.set()
        await asyncio.Event().wait()

    turn, provider = _stopping_turn(store, stop_shown)
    running = asyncio.create_task(turn.run())
    await asyncio.wait_for(provider.started.wait(), 10)
    await asyncio.wait_for(provider.last.stalled.wait(), 10)
    turn.cancel()
    await waiting.wait()
    running.cancel()  # The app quits while the screen draws the stop.

    with pytest.raises(asyncio.CancelledError):
        await running
    assert _stored_states(store, turn) == [ResponseState.INTERRUPTED]


async def test_a_cancel_nobody_asked_for_fails_the_reply_and_is_never_called_a_stop(
    store: Store,
) -> None:
    """A library that cancels its own work mid-stream is a failure, not the user's stop."""
    provider = ScriptedProvider([TextDelta("Part"), RAISE], error=asyncio.CancelledError())
    turn, _ = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert outcome.error is not None and "something other than you" in outcome.error
    _prompt, response = stored(store, turn)
    assert isinstance(response, ModelResponse)
    assert (response.state, response.text) == (ResponseState.FAILED, "Part")
    assert not turn.token.requested


@pytest.mark.parametrize("where", ["stream", "thread"])
async def test_a_provider_that_exits_the_program_fails_the_reply_and_chatui_goes_on(
    store: Store, where: str
) -> None:
    """SystemExit from a provider (or the thread it waits on) left to a task ends the loop."""
    if where == "stream":
        provider: object = ScriptedProvider([TextDelta("Part"), RAISE], error=SystemExit(4))
    else:

        class ThreadProvider(ScriptedProvider):
            """Waits on its own thread, as the local provider does."""

            async def _events(self, script, record):  # type: ignore[no-untyped-def, override]
                yield TextDelta("Part")
                done: concurrent.futures.Future[None] = concurrent.futures.Future()
                threading.Thread(target=done.set_exception, args=(SystemExit(4),)).start()
                await asyncio.wrap_future(done)

        provider = ThreadProvider([])
    turn, _ = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert outcome.error == "scripted tried to exit the program (SystemExit: 4); it was " + (
        "stopped there, and chatui goes on."
    )
    _prompt, response = stored(store, turn)
    assert isinstance(response, ModelResponse)
    assert (response.state, response.text) == (ResponseState.FAILED, "Part")
    assert not turn.token.requested


async def test_one_observer_sees_the_events_answers_approvals_and_shows_the_stop_first(
    store: Store,
) -> None:
    """The turn has one observer: it is shown each event in order, asked about each call
    that needs approval, and awaited after a stop before the partial reply is stored."""
    provider = ScriptedProvider(calls(("c1", "risky", "{}")), [*words("partial", end=None), STALL])
    seen: list[object] = []
    streaming = asyncio.Event()

    class Observer:
        async def on_event(self, event: TurnEvent) -> None:
            assert event.turn_id == turn.id
            payload = event.payload
            seen.append(getattr(payload, "status", None) or type(payload).__name__)
            if isinstance(payload, TextDelta):
                streaming.set()

        async def approve(self, call: ToolCallPart) -> Approval:
            seen.append(f"approve {call.id}")
            return Approval.ONCE

        async def stop_shown(self) -> None:
            seen.append(("stop_shown", _stored_states(store, turn)))

    def risky() -> str:
        """Something that needs the user's approval."""
        return "done"

    turn = Turn(
        conversation=store.create_conversation(),
        prompt="go",
        provider=provider,
        store=store,
        observer=Observer(),
        tools=ToolRegistry([Tool(risky, needs_approval=True)]),
    )
    running = asyncio.create_task(turn.run())
    await asyncio.wait_for(streaming.wait(), 10)
    turn.cancel()
    outcome = await running

    assert outcome.state is ResponseState.INTERRUPTED
    assert seen == [
        *("ResponseStarted", "ToolCallStart", "ToolCallDelta", "ToolCallEnd", "StreamEnd"),
        *("approval", "approve c1", "running", "ToolResultAdded"),
        *("ResponseStarted", "TextDelta"),
        ("stop_shown", [ResponseState.COMPLETE, ResponseState.STREAMING]),  # Not stored yet.
    ]
    assert _stored_states(store, turn) == [ResponseState.COMPLETE, ResponseState.INTERRUPTED]


async def test_after_a_reply_the_disk_was_too_full_to_store_the_next_prompt_is_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply whose very first write failed is in memory only: the next prompt, once
    there is space again, must not name it as its parent (a write refused for ever)."""
    provider = ScriptedProvider(words("second answer"))
    conversation = store.create_conversation()
    save_item = store.save_item

    def full_for_replies(conversation_id: str, item: object, *args: object) -> None:
        if isinstance(item, ModelResponse):
            raise sqlite3.OperationalError("database or disk is full")
        save_item(conversation_id, item, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "save_item", full_for_replies)
    failed, _ = await run_turn(provider, store, conversation, "first")
    monkeypatch.setattr(store, "save_item", save_item)  # Space was freed.
    outcome, _ = await run_turn(provider, store, conversation, "second")

    assert failed.state is ResponseState.FAILED
    assert outcome.state is ResponseState.COMPLETE, outcome.error
    stored_path = store.load_conversation(conversation.id).items
    assert [getattr(item, "text", None) for item in stored_path] == [
        "first",
        "second",
        "second answer",
    ]
