"""After a stop: continue the reply, retry it, edit the prompt, branch, send a queued message.

Each kind of turn (`chatui.turn_kinds`) runs through a real `Turn`: on the
real SDKs against the validating wire servers where what the server receives
matters, and on the scripted provider for the turn's own logic. What a stop
leaves must stay whole: one reply for a continued one (no character lost or
doubled at the seam), every version of a retried or edited exchange in the
store, the version shown is the one the model is sent, and a turn that made
nothing new leaves the conversation as it was, in memory and in the store.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatui.config import Config
from chatui.history import KEPT_REPLY_NOTE, ChatMessage
from chatui.messages import (
    Conversation,
    ModelResponse,
    ResponseState,
    ToolCallPart,
    UserPrompt,
    item_to_dict,
)
from chatui.providers.base import StreamEnd, TextDelta, ToolCallDelta
from chatui.providers.local.llama_engine import GenerationJob
from chatui.providers.local.provider import LocalProvider
from chatui.providers.remote import continue_instruction
from chatui.session import Session
from chatui.store import Store
from chatui.turn import ResponseStarted, Turn, TurnEvent, TurnOutcome, TurnSettings
from chatui.turn_kinds import (
    Continue,
    NewPrompt,
    Retry,
    TurnAsk,
    continuable,
    exchange_versions,
    retryable,
    shown_version,
)
from tests.support.clocks import FakeClock
from tests.support.local import hold_after_the_reply_token, local_config, reference_reply
from tests.support.remote import (
    WAIT,
    Wire,
    continue_turn,
    disconnected,
    run_and_stop_when,
    settings,
    when,
)
from tests.support.scripted import (
    RAISE,
    STALL,
    Gate,
    ScriptedProvider,
    WindowedProvider,
    tool_call,
    words,
)
from tests.support.turns import BRIEF, RecordingTools, Sink, make_turn, stored
from tests.support.wire import STALL as WIRE_STALL
from tests.support.wire import Gate as WireGate
from tests.support.wire import WireServer


def rows(store: Store, conversation_id: str) -> list[tuple[Any, ...]]:
    """A conversation's item and queue rows, byte for byte, in stored order."""
    db = store._db
    return [
        *db.execute(
            "SELECT * FROM items WHERE conversation_id = ? ORDER BY rowid", (conversation_id,)
        ),
        *db.execute(
            "SELECT * FROM queued WHERE conversation_id = ? ORDER BY rowid", (conversation_id,)
        ),
    ]


def conversation_row(store: Store, conversation_id: str) -> dict[str, Any]:
    """The conversation's own row, by column."""
    cursor = store._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
    (row,) = cursor.fetchall()
    return dict(zip([column[0] for column in cursor.description], row, strict=True))


def stored_parent(store: Store, item_id: str) -> str | None:
    (parent,) = store._db.execute("SELECT parent FROM items WHERE id = ?", (item_id,)).fetchone()
    return parent


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


def texts(items: list[Any]) -> list[str]:
    return [item.text for item in items]


def reply_of(conversation: Conversation) -> ModelResponse:
    last = conversation.items[-1]
    assert isinstance(last, ModelResponse)
    return last


async def stopped_at(
    store: Store,
    provider: Any,
    conversation: Conversation | None = None,
    *,
    prompt: str | Continue = "hi",
    texts: int = 2,
    settings: TurnSettings | None = None,
) -> Conversation:
    """Run a turn and stop it as its `texts`-th text piece arrives (Esc): it is interrupted."""
    turn, sink = make_turn(
        store, provider, conversation=conversation, prompt=prompt, settings=settings
    )
    sink.stop_after = texts
    outcome = await turn.run()
    assert outcome.state is ResponseState.INTERRUPTED, outcome.error
    return turn.conversation


STOPPED_EARLY = ["before the request", "before its first token"]


async def run_stopped_early(turn: Turn, when_stopped: str, gate: Gate) -> TurnOutcome:
    """Run `turn`, stopped (Esc) `when_stopped`: before it sends its request, or once its
    request waits at `gate`, before the reply's first token."""
    if when_stopped == "before the request":
        turn.cancel()
        return await turn.run()
    task = asyncio.create_task(turn.run())
    await asyncio.wait_for(gate.reached.wait(), WAIT)
    turn.cancel()
    return await task


# Continue: one reply, the partial then what follows it


WAYS = ["auto", "prefill", "instruction"]


@pytest.mark.parametrize("continue_with", WAYS)
async def test_a_continue_sends_the_partial_and_the_reply_stays_one_with_nothing_lost_at_the_seam(
    wire: Wire, server: WireServer, store: Store, continue_with: str
) -> None:
    held = threading.Event()
    server.play(
        [*wire.opening("Roses ", "are ", cut=True), WireGate(held), *wire.rest("never sent")],
        wire.reply(" red", " and blue."),
    )
    provider = wire.provider(server.base_url, continue_with=continue_with)
    turn, sink = make_turn(store, provider, settings=settings(), prompt="A poem?")
    await run_and_stop_when(turn, lambda: len(sink.texts) == 2)
    await disconnected(server)
    stopped = reply_of(turn.conversation)
    assert continuable(turn.conversation) is stopped
    output_before = stopped.usage.output_tokens

    again, shown = continue_turn(store, provider, turn, stopped)
    outcome = await again.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    sent = server.requests[1]
    assert sent.refused is None, sent.refused
    _system, messages = wire.prompt_of(sent.body)
    way = wire.continues_by if continue_with == "auto" else continue_with
    if way == "instruction":
        *messages, instruction = messages
        assert instruction == wire.user(continue_instruction("Roses are"))
    assert [message["role"] for message in messages] == ["user", "assistant"]
    assert wire.text_of(messages[0]) == "A poem?"
    assert wire.text_of(messages[1]) == "Roses are"  # The partial, ending as it must.
    assert shown.texts == ["red", " and blue."]  # Only the new text is streamed.
    for conversation in (turn.conversation, store.load_conversation(turn.conversation.id)):
        assert [item.kind for item in conversation.all_items()] == ["prompt", "response"]
        (_prompt, reply) = conversation.items
        assert reply.id == stopped.id and isinstance(reply, ModelResponse)
        assert reply.text == "Roses are red and blue."
        assert (reply.state, reply.finish_reason, reply.continued) == (
            ResponseState.COMPLETE,
            "stop",
            1,
        )
        assert reply.usage.output_tokens == output_before + 5  # What it had, and the new.
    assert continuable(turn.conversation) is None
    await provider.close()


async def test_a_continue_after_a_stop_inside_a_call_drops_it_and_resumes_from_the_text(
    wire: Wire, server: WireServer, store: Store
) -> None:
    call = wire.call(0, "call_abc", "read_file", '{"pa', 'th": "no', cut=True)
    server.play(
        [*wire.opening("Let me look. "), *call, WIRE_STALL],
        wire.reply("I will not need it."),
    )
    provider = wire.provider(server.base_url)
    tools = RecordingTools()
    turn, sink = make_turn(store, provider, settings=settings(), tools=tools)
    await run_and_stop_when(
        turn, lambda: sum(isinstance(e.payload, ToolCallDelta) for e in sink.events) == 2
    )
    await disconnected(server)
    stopped = reply_of(turn.conversation)
    assert [call.complete for call in stopped.tool_calls] == [False]

    again, _ = continue_turn(store, provider, turn, stopped, tools=tools)
    outcome = await again.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    sent = server.requests[1]
    assert sent.refused is None, sent.refused
    assert "call_abc" not in json.dumps(sent.body) and "read_file" not in json.dumps(sent.body)
    _system, messages = wire.prompt_of(sent.body)
    assert any(m["role"] == "assistant" and wire.text_of(m) == "Let me look." for m in messages)
    for reply in (stopped, stored(store, again)[-1]):
        assert reply.text == "Let me look. I will not need it."
        assert reply.tool_calls == [] and reply.continued == 1
        assert not any(isinstance(part, ToolCallPart) for part in reply.parts)
    assert tools.ran == []  # The cut-off call never ran, nor came back.
    await provider.close()


async def test_a_reply_continued_twice_is_still_one_and_esc_during_a_continue_keeps_what_came(
    store: Store,
) -> None:
    provider = ScriptedProvider(
        [TextDelta("One "), TextDelta("two "), STALL],
        [TextDelta("three "), TextDelta("four "), STALL],
        [TextDelta("five."), StreamEnd("stop")],
    )
    conversation = await stopped_at(store, provider, texts=2)
    reply = reply_of(conversation)

    await stopped_at(store, provider, conversation, prompt=Continue(reply), texts=2)  # Esc.

    again = store.load_conversation(conversation.id)
    for version in (reply, again.items[-1]):
        assert isinstance(version, ModelResponse)
        assert version.text == "One two three four "
        assert (version.state, version.continued) == (ResponseState.INTERRUPTED, 1)
    assert continuable(conversation) is reply  # Continuable again.
    assert provider.records[1].request.continuing
    assert provider.records[1].request.messages[-1] == ChatMessage("assistant", "One two ")

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Continue(reply))
    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert provider.records[2].request.messages[-1] == ChatMessage(
        "assistant", "One two three four "
    )
    for version in (reply, *stored(store, turn)[1:]):
        assert isinstance(version, ModelResponse)
        assert version.text == "One two three four five."
        assert (version.state, version.continued) == (ResponseState.COMPLETE, 2)
    assert len(store.load_conversation(conversation.id).all_items()) == 2


@pytest.mark.parametrize("when_stopped", STOPPED_EARLY)
async def test_a_continue_stopped_before_anything_new_leaves_the_reply_exactly_as_it_was(
    store: Store, when_stopped: str
) -> None:
    gate = Gate()
    provider = ScriptedProvider(
        [TextDelta("Half "), TextDelta("a "), STALL],
        [gate, TextDelta("reply."), StreamEnd("stop")],
    )
    conversation = await stopped_at(store, provider, texts=2)
    reply = reply_of(conversation)
    before, stored_before = item_to_dict(reply), rows(store, conversation.id)

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Continue(reply))
    outcome = await run_stopped_early(turn, when_stopped, gate)

    assert outcome.state is ResponseState.INTERRUPTED
    assert item_to_dict(reply) == before  # State, continued count, parts, usage, timings.
    assert rows(store, conversation.id) == stored_before
    assert continuable(conversation) is reply


async def test_a_continuation_that_calls_a_tool_runs_it_and_the_turn_goes_on(store: Store) -> None:
    provider = ScriptedProvider(
        [TextDelta("Let me "), STALL],
        [
            TextDelta("look."),
            *tool_call(0, "call_1", "echo", ['{"a": 1}']),
            StreamEnd("tool_calls"),
        ],
        words("Found it."),
    )
    tools = RecordingTools()
    conversation = await stopped_at(store, provider, texts=1)
    reply = reply_of(conversation)

    turn, _ = make_turn(
        store, provider, conversation=conversation, tools=tools, prompt=Continue(reply)
    )
    assert (await turn.run()).state is ResponseState.COMPLETE

    assert tools.ran == ["call_1"]
    assert [item.kind for item in conversation.items] == [
        "prompt",
        "response",
        "tool_result",
        "response",
    ]
    assert conversation.items[1] is reply and reply.text == "Let me look."
    assert (reply.continued, reply_of(conversation).continued) == (1, 0)
    follow_up = provider.records[2].request
    assert not follow_up.continuing
    assert [m.role for m in follow_up.messages] == ["user", "assistant", "tool"]
    assert follow_up.messages[1].content == "Let me look."
    assert stored(store, turn) == conversation.items


async def test_a_reply_cut_at_the_token_limit_is_continued(store: Store) -> None:
    provider = ScriptedProvider(
        [TextDelta("A long "), TextDelta("story"), StreamEnd("length")],
        [TextDelta(" ends here."), StreamEnd("stop")],
    )
    turn, _ = make_turn(store, provider)
    assert (await turn.run()).state is ResponseState.COMPLETE
    reply = continuable(turn.conversation)
    assert reply is not None and reply.finish_reason == "length"

    again, _ = make_turn(store, provider, conversation=turn.conversation, prompt=Continue(reply))
    assert (await again.run()).state is ResponseState.COMPLETE

    assert provider.records[1].request.messages[-1] == ChatMessage("assistant", "A long story")
    (_prompt, whole) = stored(store, again)
    assert whole.text == "A long story ends here." and whole.continued == 1
    assert whole.finish_reason == "stop" and continuable(again.conversation) is None


async def test_a_continued_replys_speed_counts_the_continuation_alone(store: Store) -> None:
    provider = ScriptedProvider(
        [TextDelta("A long "), TextDelta("story"), StreamEnd("length")],
        [TextDelta(" ends"), TextDelta(" here"), TextDelta("."), StreamEnd("stop")],
    )
    turn, _ = make_turn(store, provider)
    await turn.run()
    reply = continuable(turn.conversation)
    assert reply is not None and reply.received == 2
    again, _ = make_turn(store, provider, conversation=turn.conversation, prompt=Continue(reply))
    again.clock = FakeClock()  # Each read a step later: the span is known.
    await again.run()

    timings = reply.timings
    assert reply.received == 5 and timings.counted_from == 2
    assert timings.first_token is not None and timings.last_token is not None
    span = timings.last_token - timings.first_token
    assert span > 0 and timings.tokens_per_second(reply.received) == 2 / span  # Two gaps.


async def test_a_continue_that_fails_before_anything_new_leaves_the_reply_as_it_was(
    store: Store,
) -> None:
    provider = ScriptedProvider([TextDelta("Half "), TextDelta("a "), STALL], [RAISE])
    conversation = await stopped_at(store, provider, texts=2)
    reply = reply_of(conversation)
    before, stored_before = item_to_dict(reply), rows(store, conversation.id)

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Continue(reply))
    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED and outcome.error  # Said, not stored.
    assert item_to_dict(reply) == before
    assert rows(store, conversation.id) == stored_before
    assert continuable(conversation) is reply


async def test_a_continue_that_cannot_fit_sends_nothing_and_leaves_the_reply_as_it_was(
    store: Store,
) -> None:
    roomy = WindowedProvider(window=4000, reply=50)
    roomy.play([TextDelta("word " * 300), STALL])
    conversation = await stopped_at(store, roomy, texts=1)
    reply = reply_of(conversation)
    before, stored_before = item_to_dict(reply), rows(store, conversation.id)
    small = WindowedProvider(window=200, reply=50)

    turn, _ = make_turn(store, small, conversation=conversation, prompt=Continue(reply))
    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED and not outcome.refused
    assert "too long to go on with" in (outcome.error or "")
    assert small.records == []
    assert item_to_dict(reply) == before and rows(store, conversation.id) == stored_before
    assert conversation.items[-1] is reply


# Retry: a new version beside the old one


async def test_a_retried_reply_is_a_version_beside_the_old_one_also_after_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    provider = ScriptedProvider([TextDelta("First "), TextDelta("try"), STALL], words("Again."))
    conversation = await stopped_at(store, provider, texts=1)
    prompt, old = conversation.items
    assert retryable(conversation) is prompt

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Retry(prompt))
    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    new = reply_of(conversation)
    assert provider.records[1].request.messages == [ChatMessage("user", "hi")]  # Not the old.
    assert ids(conversation.items) == [prompt.id, new.id]
    assert ids(conversation.versions(new)) == [old.id, new.id]
    assert ids(exchange_versions(conversation, prompt)) == [old.id, new.id]
    assert shown_version(conversation, prompt) == (2, 2)
    store.close()

    reopened = Store(path)
    loaded = reopened.load_conversation(conversation.id)
    assert ids(loaded.items) == [prompt.id, new.id]
    assert ids(exchange_versions(loaded, loaded.items[0])) == [old.id, new.id]
    assert texts(exchange_versions(loaded, loaded.items[0])) == ["First ", "Again."]
    assert shown_version(loaded, loaded.items[0]) == (2, 2)
    reopened.close()


async def test_the_next_turn_is_sent_the_version_shown(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    provider = ScriptedProvider(words("Old answer."), words("New answer."), words("Sure."))
    turn, _ = make_turn(store, provider)
    await turn.run()
    conversation = turn.conversation
    prompt, old = conversation.items
    await make_turn(store, provider, conversation=conversation, prompt=Retry(prompt))[0].run()

    conversation.select(old.id)  # Flip back to the first version.
    store.set_leaf(conversation.id, conversation.leaf)
    turn, _ = make_turn(store, provider, conversation=conversation, prompt="And then?")
    assert (await turn.run()).state is ResponseState.COMPLETE

    assert provider.records[2].request.messages == [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "Old answer."),
        ChatMessage("user", "And then?"),
    ]
    store.close()
    loaded = Store(path).load_conversation(conversation.id)
    assert texts(loaded.items) == ["hi", "Old answer.", "And then?", "Sure."]
    assert texts(exchange_versions(loaded, loaded.items[0])) == [
        "Old answer.",
        "New answer.",
    ]


async def test_retrying_a_failed_reply_makes_a_new_version(store: Store) -> None:
    provider = ScriptedProvider([TextDelta("Par"), RAISE], words("Whole."))
    turn, _ = make_turn(store, provider)
    assert (await turn.run()).state is ResponseState.FAILED
    conversation = turn.conversation
    prompt, failed = conversation.items
    assert retryable(conversation) is prompt

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Retry(prompt))
    assert (await turn.run()).state is ResponseState.COMPLETE

    assert provider.records[1].request.messages == [ChatMessage("user", "hi")]
    new = reply_of(conversation)
    assert ids(conversation.versions(new)) == [failed.id, new.id]
    loaded = store.load_conversation(conversation.id)
    assert ids(loaded.items) == [prompt.id, new.id] and len(loaded.all_items()) == 3


async def test_retrying_a_prompt_that_has_no_reply_answers_it(store: Store) -> None:
    provider = ScriptedProvider(words("At last."))
    turn, _ = make_turn(store, provider)
    turn.cancel()  # Esc right after Enter: the prompt is kept, nothing was sent.
    assert (await turn.run()).state is ResponseState.INTERRUPTED
    conversation = turn.conversation
    (prompt,) = conversation.items
    assert retryable(conversation) is prompt

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Retry(prompt))
    assert (await turn.run()).state is ResponseState.COMPLETE

    assert [item.kind for item in conversation.items] == ["prompt", "response"]
    assert reply_of(conversation).text == "At last."
    assert store.load_conversation(conversation.id).items == conversation.items
    assert shown_version(conversation, prompt) == (1, 1)


@pytest.mark.parametrize("when_stopped", STOPPED_EARLY)
async def test_a_retry_stopped_before_any_reply_leaves_the_old_one_shown(
    store: Store, when_stopped: str
) -> None:
    gate = Gate()
    provider = ScriptedProvider(words("Old."), [gate, *words("New.")])
    turn, _ = make_turn(store, provider)
    await turn.run()
    conversation = turn.conversation
    prompt, old = conversation.items
    stored_before = rows(store, conversation.id)

    turn, _ = make_turn(store, provider, conversation=conversation, prompt=Retry(prompt))
    outcome = await run_stopped_early(turn, when_stopped, gate)

    assert outcome.state is ResponseState.INTERRUPTED
    assert conversation.items == [prompt, old]
    assert conversation.versions(old) == [old]  # No empty version beside it.
    loaded = store.load_conversation(conversation.id)
    assert loaded.items == [prompt, old] and loaded.all_items() == [prompt, old]
    assert rows(store, conversation.id) == stored_before


# Edit the last prompt: the old exchange becomes a version


async def test_an_edited_last_prompt_makes_the_old_exchange_a_version(store: Store) -> None:
    provider = ScriptedProvider(words("A."), words("B."), words("Better B."))
    first, _ = make_turn(store, provider, prompt="a")
    await first.run()
    conversation = first.conversation
    await make_turn(store, provider, conversation=conversation, prompt="b")[0].run()
    p_a, r_a, p_b, r_b = conversation.items

    turn, _ = make_turn(
        store, provider, conversation=conversation, prompt=NewPrompt("b, better", replaces=p_b)
    )
    assert (await turn.run()).state is ResponseState.COMPLETE

    edited, answer = conversation.items[2:]
    assert ids(conversation.items[:2]) == [p_a.id, r_a.id] and edited.text == "b, better"
    assert provider.records[2].request.messages == [
        ChatMessage("user", "a"),
        ChatMessage("assistant", "A."),
        ChatMessage("user", "b, better"),
    ]
    assert stored_parent(store, edited.id) == stored_parent(store, p_b.id) == r_a.id
    assert ids(conversation.versions(edited)) == [p_b.id, edited.id]
    assert isinstance(edited, UserPrompt)
    assert ids(exchange_versions(conversation, edited)) == [r_b.id, answer.id]
    loaded = store.load_conversation(conversation.id)
    assert ids(loaded.items) == ids(conversation.items)
    loaded.select(p_b.id)
    assert ids(loaded.items) == [p_a.id, r_a.id, p_b.id, r_b.id]


async def test_an_edited_first_prompt_is_a_version_of_it(store: Store) -> None:
    provider = ScriptedProvider(words("A."), words("Better A."))
    first, _ = make_turn(store, provider, prompt="a")
    await first.run()
    conversation = first.conversation
    p_a, r_a = conversation.items
    assert isinstance(p_a, UserPrompt)

    turn, _ = make_turn(
        store, provider, conversation=conversation, prompt=NewPrompt("a, better", replaces=p_a)
    )
    assert (await turn.run()).state is ResponseState.COMPLETE

    edited, _answer = conversation.items
    assert provider.records[1].request.messages == [ChatMessage("user", "a, better")]
    assert stored_parent(store, edited.id) is None
    assert ids(conversation.versions(edited)) == [p_a.id, edited.id]
    loaded = store.load_conversation(conversation.id)
    assert ids(loaded.items) == ids(conversation.items)
    loaded.select(p_a.id)
    assert ids(loaded.items) == [p_a.id, r_a.id]


async def test_a_refused_edited_prompt_leaves_the_old_version_shown_and_stored(
    store: Store,
) -> None:
    provider = WindowedProvider(window=400, reply=50)
    provider.play(words("A."))
    first, _ = make_turn(store, provider, prompt="a")
    await first.run()
    conversation = first.conversation
    shown_before, stored_before = list(conversation.items), rows(store, conversation.id)
    leaf_before = conversation_row(store, conversation.id)["leaf"]

    turn, _ = make_turn(
        store,
        provider,
        conversation=conversation,
        prompt=NewPrompt("far too long " * 200, replaces=conversation.items[0]),
    )
    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED and outcome.refused, outcome.error
    assert len(provider.records) == 1  # Nothing was sent.
    assert conversation.items == shown_before and conversation.all_items() == shown_before
    assert rows(store, conversation.id) == stored_before
    assert conversation_row(store, conversation.id)["leaf"] == leaf_before
    assert store.load_conversation(conversation.id).items == shown_before


# Branching from an earlier prompt


async def test_a_turn_in_a_fork_leaves_the_original_conversation_as_it_was(store: Store) -> None:
    provider = ScriptedProvider(words("One."), words("Two."), words("Two, again."))
    session = Session(Config(db_path=str(store.path), system_prompt=""), store, provider)
    original = store.create_conversation()
    for text in ("one", "two"):
        turn = session.new_turn(original, text, observer=Sink())
        session.turn_finished(turn, await turn.run())
    p1, r1, p2, _r2 = original.items
    items_before = rows(store, original.id)
    row_before = conversation_row(store, original.id)

    fork = await session.fork(original, p2)
    turn = session.new_turn(fork, "two, edited", observer=Sink())
    outcome = await turn.run()
    session.turn_finished(turn, outcome)

    assert outcome.state is ResponseState.COMPLETE
    assert rows(store, original.id) == items_before
    released = {"owner": None, "owner_pid": None}  # Left, as any conversation one leaves.
    assert conversation_row(store, original.id) == row_before | released
    assert provider.records[2].request.messages == [
        ChatMessage("user", "one"),
        ChatMessage("assistant", "One."),
        ChatMessage("user", "two, edited"),
    ]
    loaded = store.load_conversation(fork.id)
    assert texts(loaded.items) == ["one", "One.", "two, edited", "Two, again."]
    assert not set(ids(loaded.all_items())) & {p1.id, r1.id, p2.id}
    assert loaded.branched_from is not None and loaded.branched_from.conversation_id == original.id


# What the model is sent after a stop: interrupted_reply = "keep"


@pytest.mark.parametrize("cut_call", [False, True], ids=["text-only", "with-a-cut-off-call"])
async def test_a_kept_interrupted_reply_reaches_the_api_through_the_turn(
    wire: Wire, server: WireServer, store: Store, cut_call: bool
) -> None:
    call = wire.call(0, "call_abc", "read_file", '{"pa', 'th": "no', cut=True) if cut_call else []
    server.play([*wire.opening("Let me look. "), *call, WIRE_STALL], wire.reply("Fine."))
    provider = wire.provider(server.base_url)
    session = Session(Config(db_path=str(store.path), interrupted_reply="keep"), store, provider)
    conversation = store.create_conversation()
    sink = Sink()
    turn = sink.turn = session.new_turn(conversation, "Read a.", observer=sink)
    deltas = 2 if cut_call else 0
    await run_and_stop_when(
        turn,
        lambda: (
            sink.texts and sum(isinstance(e.payload, ToolCallDelta) for e in sink.events) == deltas
        ),
    )
    await disconnected(server)

    turn = session.new_turn(conversation, "Never mind.", observer=Sink())
    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    sent = server.requests[1]
    assert sent.refused is None, sent.refused
    _system, messages = wire.prompt_of(sent.body)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert wire.text_of(messages[1]) == f"Let me look.\n\n{KEPT_REPLY_NOTE}"
    assert wire.text_of(messages[2]) == "Never mind."  # No note: the reply says it.
    assert "call_abc" not in json.dumps(sent.body) and "read_file" not in json.dumps(sent.body)
    await provider.close()


# A queued message, sent


async def test_a_queued_message_sent_leaves_the_queue_in_the_prompts_own_write(
    store: Store,
) -> None:
    conversation = store.create_conversation()
    message = store.queue_message(conversation.id, "and then?")
    later = store.queue_message(conversation.id, "later")
    provider = ScriptedProvider(words("Then this."))
    turn, sink = make_turn(
        store, provider, conversation=conversation, prompt=NewPrompt(message.text, id=message.id)
    )
    seen: list[tuple[list[str], list[str]]] = []

    def look(event: TurnEvent) -> None:  # Once the prompt is stored, before anything is sent.
        if isinstance(event.payload, ResponseStarted):
            queue = [m.id for m in store.load_queue(conversation.id)]
            items = store.load_conversation(conversation.id).items
            seen.append((queue, [item.id for item in items if isinstance(item, UserPrompt)]))

    sink.react = look
    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert seen == [([later.id], [message.id])]
    assert outcome.prompt.id == message.id and outcome.prompt.text == "and then?"
    assert store.load_queue(conversation.id) == [later]


async def test_a_queued_message_whose_prompt_cannot_be_stored_stays_queued_and_unsent(
    store: Store,
) -> None:
    conversation = store.create_conversation()
    message = store.queue_message(conversation.id, "keep me")
    provider = ScriptedProvider(words("Never."))
    store._db.execute(  # The prompt's write fails, as on a full disk.
        "CREATE TEMP TRIGGER full BEFORE INSERT ON items"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    turn, _ = make_turn(
        store, provider, conversation=conversation, prompt=NewPrompt(message.text, id=message.id)
    )

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED and "could not be saved" in (outcome.error or "")
    assert store.load_queue(conversation.id) == [message]
    assert conversation.items == [] and provider.records == []
    assert store.load_conversation(conversation.id).all_items() == []

    store._db.execute("DROP TRIGGER full")  # Space again: sent now, and only now.
    turn, _ = make_turn(
        store, provider, conversation=conversation, prompt=NewPrompt(message.text, id=message.id)
    )
    assert (await turn.run()).state is ResponseState.COMPLETE
    assert store.load_queue(conversation.id) == [] and len(provider.records) == 1
    assert ids(store.load_conversation(conversation.id).items) == ids(conversation.items)
    assert conversation.items[0] == message.prompt()


async def test_a_queued_message_sent_twice_is_stored_and_sent_once(store: Store) -> None:
    """Enter and Esc in one read may both send it: the second send finds it sent."""
    conversation = store.create_conversation()
    message = store.queue_message(conversation.id, "only once")
    provider = ScriptedProvider(words("Once."), words("Twice?"))
    for _ in range(2):
        turn, _sink = make_turn(
            store, provider, conversation=conversation, prompt=NewPrompt(message.text, message.id)
        )
        outcome = await turn.run()
        assert outcome.state is ResponseState.COMPLETE and outcome.error is None

    assert len(provider.records) == 1
    assert [item.kind for item in conversation.items] == ["prompt", "response"]
    assert store.load_conversation(conversation.id).all_items() == conversation.items
    assert store.load_queue(conversation.id) == []


# The local provider: Continue through the turn, on the tiny GGUF


@pytest.fixture
async def local(tiny_model: Path, tmp_path: Path) -> AsyncIterator[LocalProvider]:
    provider = LocalProvider(local_config(tiny_model, max_tokens=2000), state_dir=tmp_path / "kv")
    await provider.prepare()
    yield provider
    await provider.close()


RIVER = "Tell me about the river."


async def stopped_between_tokens(
    store: Store, provider: LocalProvider, conversation: Conversation, ask: str | Continue, at: int
) -> None:
    """A turn whose reply is stopped (Esc) once its `at`-th token was evaluated and shown."""
    held = hold_after_the_reply_token(provider, at)
    turn, sink = make_turn(store, provider, conversation=conversation, settings=BRIEF, prompt=ask)
    task = asyncio.create_task(turn.run())
    assert await asyncio.to_thread(held.wait, 30), "the reply was never held"
    await when(lambda: len(sink.texts) == at)  # Shown, each token a piece: none left on its way.
    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    assert provider.last_job is not None and provider.last_job.stopped == "between tokens"


async def run_local_turn(
    store: Store, provider: LocalProvider, conversation: Conversation, ask: TurnAsk, tokens: int
) -> tuple[TurnOutcome, Sink, GenerationJob | None]:
    """A turn of `ask` run to its end, its reply `tokens` tokens at most.

    Returns its outcome, what it showed, and the engine's job for its (last) request.
    """
    provider.config.max_tokens = tokens
    turn, sink = make_turn(store, provider, conversation=conversation, settings=BRIEF, prompt=ask)
    outcome = await turn.run()
    return outcome, sink, provider.last_job


async def test_a_local_reply_stopped_and_continued_twice_is_one_reply_read_once(
    local: LocalProvider, tiny_model: Path, store: Store
) -> None:
    conversation = store.create_conversation()
    await stopped_between_tokens(store, local, conversation, RIVER, at=6)
    reply = reply_of(conversation)
    first = reply.text

    await stopped_between_tokens(store, local, conversation, Continue(reply), at=5)  # Esc.
    second, continued_job = reply.text, local.last_job
    assert second.startswith(first) and len(second) > len(first)
    assert (reply.state, reply.continued) == (ResponseState.INTERRUPTED, 1)
    assert continuable(conversation) is reply  # Continuable again.

    outcome, sink, job = await run_local_turn(store, local, conversation, Continue(reply), 9)
    reference = await reference_reply(tiny_model, store, RIVER, tokens=60)

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    for continuing in (continued_job, job):
        assert continuing is not None and continuing.continuing
        assert continuing.prompt_evaluated == 0  # Not one token of the partial read again.
    assert "".join(sink.texts) == reply.text[len(second) :]  # Only the new text streamed.
    (whole,) = store.load_conversation(conversation.id).all_items()[1:]
    assert isinstance(whole, ModelResponse)
    assert (whole.text, whole.state, whole.continued) == (reply.text, ResponseState.COMPLETE, 2)
    assert len(whole.text) > len(second)
    assert reference.startswith(whole.text)  # Seamless, at both seams.


async def test_a_local_retry_after_a_stop_answers_as_a_fresh_model_would(
    local: LocalProvider, tiny_model: Path, store: Store
) -> None:
    """The stopped reply's kept tokens are rolled back: a retry is not a continue."""
    conversation = store.create_conversation()
    await stopped_between_tokens(store, local, conversation, RIVER, at=6)
    prompt, old = conversation.items
    assert isinstance(prompt, UserPrompt)

    outcome, _, job = await run_local_turn(store, local, conversation, Retry(prompt), 12)
    reference = await reference_reply(tiny_model, store, RIVER, tokens=12)

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert job is not None and not job.continuing and job.ahead == 0
    new = reply_of(conversation)
    assert isinstance(old, ModelResponse) and new.text.startswith(old.text)
    assert new.text == reference
    assert ids(conversation.versions(new)) == [old.id, new.id]
