"""The turn runner's cancellation contract, driven by the scripted provider."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from chatui.history import CANCELLED_TOOL_RESULT
from chatui.messages import (
    Conversation,
    ModelResponse,
    ResponseState,
    ToolCallPart,
    ToolResult,
    UserPrompt,
)
from chatui.providers.base import StreamEnd, TextDelta, UsageUpdate
from chatui.store import Store
from chatui.turn import (
    ResponseStarted,
    ToolResultAdded,
    Turn,
    TurnEvent,
    TurnSettings,
)
from tests.support.clocks import LoopClock
from tests.support.scripted import RAISE, STALL, Gate, ScriptedProvider, tool_call, words
from tests.support.turns import RecordingTools, Sink, make_turn, stored


async def test_complete_reply_is_streamed_stored_and_keeps_provider_usage(store: Store) -> None:
    provider = ScriptedProvider(words("Hello there, world.", usage=(12, 4)))
    turn, sink = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert "".join(sink.texts) == "Hello there, world."
    prompt, response = stored(store, turn)
    assert isinstance(prompt, UserPrompt) and prompt.text == "hi"
    assert isinstance(response, ModelResponse)
    assert response.state is ResponseState.COMPLETE
    assert response.finish_reason == "stop"
    assert response.text == "Hello there, world."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    assert not response.usage.estimated
    assert response.timings.first_token is not None and response.timings.ended is not None
    assert provider.last.closed


async def test_prompt_is_stored_before_the_request_starts(store: Store) -> None:
    provider = ScriptedProvider(words("ok"))
    turn, sink = make_turn(store, provider, prompt="keep me")
    seen_in_store: list[list[str]] = []

    def check(event: TurnEvent) -> None:
        if isinstance(event.payload, ResponseStarted):
            items = stored(store, turn)
            seen_in_store.append([i.text for i in items if isinstance(i, UserPrompt)])

    sink.react = check
    await turn.run()

    assert seen_in_store == [["keep me"]]
    assert not provider.records[0].started_cancelled


async def test_ten_cancels_give_one_cancellation(store: Store) -> None:
    provider = ScriptedProvider([*words("partial reply", end=None), STALL])
    turn, _ = make_turn(store, provider)
    callbacks: list[int] = []
    turn.token.on_cancel(lambda: callbacks.append(1))
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    results = [turn.cancel() for _ in range(10)]
    outcome = await task

    assert results == [True] + [False] * 9
    assert callbacks == [1]
    assert outcome.state is ResponseState.INTERRUPTED
    responses = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert len(responses) == 1
    assert responses[0].state is ResponseState.INTERRUPTED
    assert responses[0].text == "partial reply"


async def test_cancel_before_start_never_streams(store: Store) -> None:
    provider = ScriptedProvider(words("never shown"))
    turn, sink = make_turn(store, provider, prompt="still stored")
    turn.cancel()

    outcome = await turn.run()

    assert outcome.state is ResponseState.INTERRUPTED
    assert provider.records == []
    assert sink.events == []
    items = stored(store, turn)
    assert [i.text for i in items if isinstance(i, UserPrompt)] == ["still stored"]
    assert not [i for i in items if isinstance(i, ModelResponse)]


async def test_cancel_between_response_start_and_stream_open_stops_the_provider(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("never shown"))
    turn, sink = make_turn(store, provider)
    sink.react = lambda event: turn.cancel()  # Esc right after ResponseStarted.

    outcome = await turn.run()

    assert outcome.state is ResponseState.INTERRUPTED
    assert all(r.yielded == 0 for r in provider.records)
    assert sink.texts == []
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.state is ResponseState.INTERRUPTED and response.parts == []


async def test_nothing_reaches_ui_or_store_after_stop_with_a_busy_provider(store: Store) -> None:
    tokens = [f"t{i} " for i in range(2000)]
    provider = ScriptedProvider([TextDelta(t) for t in tokens], busy=True)
    turn, sink = make_turn(store, provider)

    def stop_at_fifth(event: TurnEvent) -> None:
        if len(sink.texts) == 5:
            turn.cancel()

    sink.react = stop_at_fifth
    outcome = await turn.run()

    assert outcome.state is ResponseState.INTERRUPTED
    assert sink.texts == tokens[:5]
    assert sink.after_stop == 0
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.text == "".join(tokens[:5])
    assert provider.last.closed
    assert provider.last.yielded < len(tokens)


async def test_cancel_from_another_thread_drops_every_later_event(store: Store) -> None:
    tokens = [TextDelta(f"{i},") for i in range(5000)]
    provider = ScriptedProvider([*tokens, STALL])  # Only the stop ends it, however late.
    turn, sink = make_turn(store, provider)
    ten_seen = threading.Event()
    sink.react = lambda event: len(sink.events) == 10 and ten_seen.set()

    def esc_from_thread() -> None:
        ten_seen.wait(10)
        turn.cancel()

    thread = threading.Thread(target=esc_from_thread)
    thread.start()
    outcome = await turn.run()
    thread.join()

    assert outcome.state is ResponseState.INTERRUPTED
    assert sink.after_stop == 0
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.text == "".join(sink.texts)
    assert 9 <= len(sink.texts) <= len(tokens)


async def test_stream_is_closed_on_cancel_while_blocked(store: Store) -> None:
    provider = ScriptedProvider([*words("waiting for more", end=None), STALL])
    turn, _sink = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()
    assert not provider.last.closed

    turn.cancel()
    outcome = await task

    assert provider.last.closed
    assert outcome.state is ResponseState.INTERRUPTED
    assert outcome.responses[0].finish_reason == "cancelled"
    assert outcome.responses[0].text == "waiting for more"


async def test_usage_received_before_the_stop_is_kept(store: Store) -> None:
    script = [UsageUpdate(40, 1), TextDelta("one "), TextDelta("two "), TextDelta("three"), STALL]
    provider = ScriptedProvider(script)
    turn, _ = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()
    turn.cancel()
    await task

    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.usage.input_tokens == 40
    assert response.usage.output_tokens == 3  # Counted from what arrived after the update.
    assert response.usage.estimated


async def test_usage_is_estimated_and_flagged_when_the_provider_sent_none(store: Store) -> None:
    provider = ScriptedProvider([TextDelta("a"), TextDelta("b"), STALL])
    turn, _ = make_turn(store, provider, settings=TurnSettings(system_prompt="x" * 400))
    task = asyncio.create_task(turn.run())
    await provider.last.stalled.wait() if provider.records else await provider.started.wait()
    await provider.last.stalled.wait()
    turn.cancel()
    await task

    usage = stored(store, turn)[1].usage
    assert usage.estimated
    assert usage.output_tokens == 2
    assert usage.input_tokens >= 100  # About chars / 4 of a 400-character system prompt.


async def test_exception_becomes_failed_outcome_with_partial_kept(store: Store) -> None:
    provider = ScriptedProvider(
        [*words("half a ", end=None), RAISE], error=ConnectionError("server hung up")
    )
    turn, _ = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "server hung up" in (outcome.error or "")
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.state is ResponseState.FAILED
    assert response.text == "half a "
    assert response.error == outcome.error
    assert provider.last.closed


async def test_secrets_never_reach_the_error_or_the_store(store: Store) -> None:
    provider = ScriptedProvider([RAISE], error=ValueError("bad key sk-secret-123 rejected"))
    settings = TurnSettings(secrets=["sk-secret-123"])
    turn, _ = make_turn(store, provider, settings=settings)

    outcome = await turn.run()

    assert "sk-secret-123" not in (outcome.error or "")
    assert "***" in (outcome.error or "")
    assert b"sk-secret-123" not in store.path.read_bytes()


async def test_stream_ending_without_end_event_fails_clearly(store: Store) -> None:
    provider = ScriptedProvider(words("cut", end=None))
    turn, _ = make_turn(store, provider)

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "closed the stream before the reply ended" in (outcome.error or "")
    assert outcome.responses[0].text == "cut"


async def test_silent_stream_times_out_with_a_clear_error(store: Store) -> None:
    clock = LoopClock()
    provider = ScriptedProvider([TextDelta("so far"), STALL])
    turn, _ = make_turn(store, provider, settings=TurnSettings(idle_timeout=60))
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    await clock.advance(61)  # A minute of silence.
    outcome = await asyncio.wait_for(task, 10)

    assert outcome.state is ResponseState.FAILED
    assert outcome.error == "scripted sent nothing for 60 s, so the request was stopped."
    assert provider.last.closed
    assert stored(store, turn)[1].text == "so far"


async def test_a_silence_shorter_than_the_idle_timeout_is_not_a_stall(store: Store) -> None:
    clock = LoopClock()
    pause = Gate()
    provider = ScriptedProvider([TextDelta("so far"), pause, *words(", then more")])
    turn, sink = make_turn(store, provider, settings=TurnSettings(idle_timeout=60))
    task = asyncio.create_task(turn.run())
    await pause.reached.wait()

    await clock.advance(45)  # Silent for most of the idle timeout, then more comes.
    pause.opened.set()
    outcome = await task

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert "".join(sink.texts) == "so far, then more"


async def test_esc_still_works_on_a_silent_stream(store: Store) -> None:
    provider = ScriptedProvider([TextDelta("so far"), STALL])
    turn, _ = make_turn(store, provider, settings=TurnSettings(idle_timeout=3600))
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    turn.cancel()
    outcome = await task

    assert outcome.state is ResponseState.INTERRUPTED
    assert provider.last.closed


async def test_external_cancellation_stores_the_partial_and_propagates(store: Store) -> None:
    provider = ScriptedProvider([TextDelta("quitting "), STALL])
    turn, _sink = make_turn(store, provider)
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    task.cancel()  # What asyncio does to running tasks when the app shuts down.
    with pytest.raises(asyncio.CancelledError):
        await task

    assert turn.token.cancelled
    assert provider.last.closed
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    assert response.state is ResponseState.INTERRUPTED
    assert response.text == "quitting "


async def test_partial_reply_is_flushed_to_the_store_while_streaming(
    store: Store, tmp_path
) -> None:
    ticks = iter(range(10_000))
    provider = ScriptedProvider([TextDelta(f"w{i} ") for i in range(5)] + [STALL])
    conversation = store.create_conversation()
    sink = Sink()
    turn = Turn(
        conversation=conversation,
        prompt="p",
        provider=provider,
        store=store,
        observer=sink,
        clock=lambda: next(ticks) * 0.5,  # Half a second passes at every reading.
    )
    sink.turn = turn
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    reader = Store(store.path)
    response = reader.load_conversation(conversation.id).items[1]
    reader.close()
    turn.cancel()
    await task

    assert response.state is ResponseState.STREAMING
    assert response.text.startswith("w0 ")
    assert len(response.text) >= len("w0 w1 w2 ")


async def test_tool_loop_runs_complete_calls_and_sends_results_back(store: Store) -> None:
    first = [*tool_call(0, "c1", "echo", ['{"x":', " 1}"]), StreamEnd("tool_calls")]
    provider = ScriptedProvider(first, words("done"))
    tools = RecordingTools()
    turn, sink = make_turn(store, provider, tools=tools)

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert tools.ran == ["c1"]
    second_history = provider.records[1].request.messages
    assert [m.role for m in second_history[-3:]] == ["user", "assistant", "tool"]
    assert second_history[-1].content == 'echo {"x": 1}'
    assert any(isinstance(e.payload, ToolResultAdded) for e in sink.events)


async def test_tool_that_raises_gives_an_error_result_not_a_crash(store: Store) -> None:
    first = [*tool_call(0, "c1", "boom", ["{}"]), StreamEnd("tool_calls")]
    provider = ScriptedProvider(first, words("recovered"))
    turn, _ = make_turn(store, provider, tools=RecordingTools())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    result = next(i for i in stored(store, turn) if isinstance(i, ToolResult))
    assert result.state == "error" and "tool exploded" in result.content


async def test_cancel_while_a_tool_runs_cancels_it_and_records_the_result(store: Store) -> None:
    first = [
        *tool_call(0, "c1", "echo", ["{}"]),
        *tool_call(1, "c2", "wait", ["{}"]),
        *tool_call(2, "c3", "echo", ["{}"]),
        StreamEnd("tool_calls"),
    ]
    provider = ScriptedProvider(first, words("never"))
    tools = RecordingTools()
    turn, _ = make_turn(store, provider, tools=tools)
    task = asyncio.create_task(turn.run())
    await tools.blocked.wait()

    turn.cancel()
    outcome = await task

    assert outcome.state is ResponseState.INTERRUPTED
    assert tools.ran == ["c1", "c2", "c3"] and tools.cancelled == ["c2"]  # All at once.
    results = {i.call_id: i for i in stored(store, turn) if isinstance(i, ToolResult)}
    assert results["c1"].state == "ok" and results["c3"].state == "ok"  # Finished: kept.
    assert results["c2"].state == "cancelled" and results["c2"].content == CANCELLED_TOOL_RESULT
    assert len(provider.records) == 1


async def test_tool_call_cut_off_by_a_stop_is_never_run(store: Store) -> None:
    script = [*tool_call(0, "c1", "echo", ['{"x": '], end=False), STALL]
    provider = ScriptedProvider(script)
    tools = RecordingTools()
    turn, _ = make_turn(store, provider, tools=tools)
    task = asyncio.create_task(turn.run())
    await provider.started.wait()
    await provider.last.stalled.wait()

    turn.cancel()
    await task

    assert tools.ran == []
    (response,) = [i for i in stored(store, turn) if isinstance(i, ModelResponse)]
    (call,) = response.tool_calls
    assert call.arguments == '{"x": ' and not call.complete
    assert not [i for i in stored(store, turn) if isinstance(i, ToolResult)]


async def test_events_carry_the_turn_identity(store: Store) -> None:
    conversation = Conversation()
    store_conversation = store.create_conversation()
    conversation.id = store_conversation.id
    a, sink_a = make_turn(store, ScriptedProvider(words("a")), conversation=conversation)
    b, sink_b = make_turn(store, ScriptedProvider(words("b")), conversation=conversation)
    await a.run()
    await b.run()

    assert a.id != b.id
    assert {e.turn_id for e in sink_a.events} == {a.id}
    assert {e.turn_id for e in sink_b.events} == {b.id}


def _calling(*specs: tuple[str, str]) -> list:
    """A reply calling `echo` with (id, arguments) each, then ending for tool calls."""
    steps: list = []
    for index, (call_id, arguments) in enumerate(specs):
        steps += tool_call(index, call_id, "echo", [arguments])
    return [*steps, StreamEnd("tool_calls")]


async def test_every_tool_call_gets_an_id_of_its_own_in_the_conversation(store: Store) -> None:
    """No id, or one used before (in this reply, an earlier one, an earlier turn): a fresh one."""
    safe = re.compile(r"[a-zA-Z0-9_-]{1,40}")  # What both APIs accept.

    async def two_turns() -> tuple[list[ToolCallPart], list[ToolResult], ScriptedProvider]:
        first = _calling(("", '{"n": 1}'), ("dup", '{"n": 2}'), ("dup", '{"n": 3}'))
        second = _calling(("dup", '{"n": 4}'), ("", '{"n": 5}'))
        third = _calling(("dup", '{"n": 6}'))  # The next turn's.
        provider = ScriptedProvider(first, second, words("done"), third, words("again"))
        turn, _ = make_turn(store, provider, tools=RecordingTools())
        assert (await turn.run()).state is ResponseState.COMPLETE
        later, _ = make_turn(
            store, provider, conversation=turn.conversation, tools=RecordingTools()
        )
        assert (await later.run()).state is ResponseState.COMPLETE
        items = stored(store, later)
        calls = [c for i in items if isinstance(i, ModelResponse) for c in i.tool_calls]
        return calls, [i for i in items if isinstance(i, ToolResult)], provider

    calls, results, provider = await two_turns()

    ids = [call.id for call in calls]
    assert len(set(ids)) == len(ids) == 6 and all(safe.fullmatch(i) for i in ids)
    assert ids[1] == "dup"  # A provider's id is kept while it is unused.
    by_id = {call.id: call for call in calls}
    assert sorted(r.call_id for r in results) == sorted(ids)
    assert all(r.content == f"echo {by_id[r.call_id].arguments}" for r in results)
    # The model is sent the stored ids, each result after its own call.
    history = provider.records[-1].request.messages
    sent = {c.id: c.arguments for m in history if m.role == "assistant" for c in m.tool_calls}
    assert sent == {call.id: call.arguments for call in calls}
    answers = [m for m in history if m.role == "tool"]
    assert all(m.content == f"echo {sent[m.tool_call_id]}" for m in answers)
    assert (await two_turns())[0] == calls  # The same ids again: deterministic.
