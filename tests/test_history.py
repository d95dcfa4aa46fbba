"""History repair: interrupted responses never reach a model as if complete."""

from __future__ import annotations

import itertools
import re

from chatui.history import (
    CANCELLED_TOOL_RESULT,
    KEPT_REPLY_NOTE,
    TRIMMED_NOTE,
    ChatMessage,
    ToolCall,
    build_history,
    history_bytes,
    pair_results,
)
from chatui.messages import (
    ModelResponse,
    ResponseState,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
)
from chatui.store import Store

NOTE = "[interrupted]"


def reply(text: str = "", *calls: ToolCallPart, state=ResponseState.COMPLETE) -> ModelResponse:
    parts = ([TextPart(text)] if text else []) + list(calls)
    return ModelResponse("p", "m", parts=parts, state=state)


def build(items, system: str = "") -> list[ChatMessage]:
    return build_history(items, system_prompt=system, interrupted_note=NOTE)


def assert_api_shape(messages: list[ChatMessage]) -> None:
    """What both APIs demand: alternation, and every tool call answered at once."""
    body = [m for m in messages if m.role != "system"]
    assert body[0].role == "user"
    call_ids = [c.id for m in body for c in m.tool_calls]
    assert len(set(call_ids)) == len(call_ids), "duplicate tool-call ids"
    for previous, current in itertools.pairwise(body):
        assert not (previous.role == current.role == "user"), "consecutive user messages"
        assert not (previous.role == current.role == "assistant"), "consecutive assistant messages"
    for i, message in enumerate(body):
        if message.role == "assistant":
            assert message.content or message.tool_calls, "empty assistant message"
            ids = [c.id for c in message.tool_calls]
            following = [m.tool_call_id for m in body[i + 1 : i + 1 + len(ids)]]
            assert following == ids, "tool calls not followed by their results"
        if message.role == "tool":
            previous_calls = [c.id for m in body[:i] if m.role == "assistant" for c in m.tool_calls]
            assert message.tool_call_id in previous_calls, "result without a call"


def test_complete_conversation_passes_through() -> None:
    items = [UserPrompt("hi"), reply("hello"), UserPrompt("bye")]

    messages = build(items, system="be brief")

    assert messages == [
        ChatMessage("system", "be brief"),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hello"),
        ChatMessage("user", "bye"),
    ]


def test_interrupted_text_reply_is_dropped_and_the_model_is_told() -> None:
    items = [
        UserPrompt("write a poem"),
        reply("Roses are", state=ResponseState.INTERRUPTED),
        UserPrompt("shorter please"),
    ]

    messages = build(items)

    assert messages == [ChatMessage("user", f"write a poem\n\n{NOTE}\n\nshorter please")]
    assert all("Roses" not in m.content for m in messages)
    assert_api_shape(messages)


def test_reply_cut_off_inside_tool_call_arguments() -> None:
    cut = ToolCallPart("c1", "search", '{"query": "wea', complete=False)
    items = [
        UserPrompt("weather?"),
        reply("Let me look.", cut, state=ResponseState.INTERRUPTED),
        UserPrompt("never mind"),
    ]

    messages = build(items)

    assert not any(m.tool_calls for m in messages)
    assert not any(m.role == "tool" for m in messages)
    assert messages[-1].content.endswith(f"{NOTE}\n\nnever mind")
    assert_api_shape(messages)


def test_completed_tool_call_whose_run_was_cancelled_gets_a_cancelled_result() -> None:
    done = ToolCallPart("c1", "echo", "{}", complete=True)
    stopped = ToolCallPart("c2", "slow", "{}", complete=True)
    items = [
        UserPrompt("go"),
        reply("", done, stopped),
        ToolResult("c1", "echo", "echoed"),
        UserPrompt("what happened?"),
    ]

    messages = build(items)

    assert messages[1] == ChatMessage(
        "assistant", "", tool_calls=(ToolCall("c1", "echo", "{}"), ToolCall("c2", "slow", "{}"))
    )
    assert messages[2] == ChatMessage("tool", "echoed", tool_call_id="c1", name="echo")
    assert messages[3] == ChatMessage("tool", CANCELLED_TOOL_RESULT, tool_call_id="c2", name="slow")
    assert messages[4] == ChatMessage("user", "what happened?")
    assert_api_shape(messages)


def test_stored_cancelled_result_is_used_as_is() -> None:
    call = ToolCallPart("c1", "slow", "{}", complete=True)
    items = [
        UserPrompt("go"),
        reply("", call),
        ToolResult("c1", "slow", "cancelled by the user", state="cancelled"),
        UserPrompt("again"),
    ]

    assert build(items)[2].content == "cancelled by the user"


def test_tool_result_without_a_call_is_dropped() -> None:
    items = [
        UserPrompt("hi"),
        ToolResult("ghost", "echo", "orphan"),
        reply("hello"),
        UserPrompt("and?"),
    ]

    messages = build(items)

    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert_api_shape(messages)


def test_results_of_an_interrupted_response_are_dropped_with_it() -> None:
    call = ToolCallPart("c1", "echo", "{}", complete=True)
    items = [
        UserPrompt("hi"),
        reply("", call, state=ResponseState.INTERRUPTED),
        ToolResult("c1", "echo", "late"),
        UserPrompt("again"),
    ]

    messages = build(items)

    assert [m.role for m in messages] == ["user"]
    assert_api_shape(messages)


def test_several_interruptions_in_a_row_give_one_note_and_valid_shape() -> None:
    items = [
        UserPrompt("one"),
        reply("o", state=ResponseState.INTERRUPTED),
        UserPrompt("two"),
        reply("t", state=ResponseState.INTERRUPTED),
        UserPrompt("three"),
        reply("", ToolCallPart("c9", "x", "{", complete=False), state=ResponseState.INTERRUPTED),
        UserPrompt("four"),
        reply("finally"),
        UserPrompt("five"),
    ]

    messages = build(items)

    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[0].content == (f"one\n\n{NOTE}\n\ntwo\n\n{NOTE}\n\nthree\n\n{NOTE}\n\nfour")
    assert_api_shape(messages)


def test_failed_response_is_dropped_without_a_note() -> None:
    items = [UserPrompt("a"), reply("par", state=ResponseState.FAILED), UserPrompt("b")]

    assert build(items) == [ChatMessage("user", "a\n\nb")]


def test_repair_is_deterministic() -> None:
    def conversation():
        call = ToolCallPart("c1", "echo", '{"a": 1}', complete=True)
        return [
            UserPrompt("x", id="1"),
            reply("par", state=ResponseState.INTERRUPTED),
            UserPrompt("y", id="2"),
            reply("ok", call),
            UserPrompt("z", id="3"),
        ]

    first = history_bytes(build(conversation(), system="s"))
    second = history_bytes(build(conversation(), system="s"))

    assert first == second
    assert b"par" not in first


def test_an_id_used_again_by_a_later_response_gets_its_own_result_and_a_unique_id() -> None:
    """Local ids once restarted at call_0 for each request: each result must stay with
    its own call, and the history must not carry the id twice."""
    items = [
        UserPrompt("first"),
        reply("", ToolCallPart("call_0", "echo", '{"n": 1}', complete=True)),
        ToolResult("call_0", "echo", "one"),
        reply("then", ToolCallPart("call_0", "echo", '{"n": 2}', complete=True)),
        ToolResult("call_0", "echo", "two"),
        reply("done"),
        UserPrompt("second"),
    ]

    messages = build(items)

    calls = [c for m in messages for c in m.tool_calls]
    results = {m.tool_call_id: m.content for m in messages if m.role == "tool"}
    assert [c.id for c in calls] == ["call_0", "call_0_2"]
    assert results == {"call_0": "one", "call_0_2": "two"}
    assert_api_shape(messages)


def test_a_repeated_id_whose_run_was_stopped_does_not_take_the_earlier_result() -> None:
    items = [
        UserPrompt("go"),
        reply("", ToolCallPart("call_0", "echo", "{}", complete=True)),
        ToolResult("call_0", "echo", "first result"),
        reply("", ToolCallPart("call_0", "slow", "{}", complete=True)),  # Stopped: no result.
        UserPrompt("what happened?"),
    ]

    messages = build(items)

    tool_messages = [m for m in messages if m.role == "tool"]
    assert [(m.tool_call_id, m.content) for m in tool_messages] == [
        ("call_0", "first result"),
        ("call_0_2", CANCELLED_TOOL_RESULT),
    ]
    assert_api_shape(messages)


def test_a_late_result_goes_to_the_nearest_call_without_one() -> None:
    """A result pairs with the nearest earlier call of its id that has no result yet,
    also when that call's response was left out, and calls of one response in order."""
    items = [
        UserPrompt("go"),
        reply("", ToolCallPart("x", "a", "{}", complete=True)),  # Stopped: no result.
        reply("", ToolCallPart("x", "b", "{}", complete=True), state=ResponseState.INTERRUPTED),
        ToolResult("x", "b", "for the interrupted call"),
        reply("", ToolCallPart("x", "c", "{}", complete=True), ToolCallPart("x", "d", "{}", True)),
        ToolResult("x", "c", "for c"),
        ToolResult("x", "d", "for d"),
        UserPrompt("and?"),
    ]

    messages = build(items)

    tool_messages = [(m.tool_call_id, m.name, m.content) for m in messages if m.role == "tool"]
    assert tool_messages == [
        ("x", "a", CANCELLED_TOOL_RESULT),
        ("x_2", "c", "for c"),
        ("x_3", "d", "for d"),
    ]
    assert_api_shape(messages)


def test_unique_ids_are_api_safe_and_never_collide_with_an_existing_id() -> None:
    items = [
        UserPrompt("go"),
        reply("", ToolCallPart("x", "a", "{}", True), ToolCallPart("x_2", "b", "{}", True)),
        reply("", ToolCallPart("x", "c", "{}", True), ToolCallPart("tool.call:1", "d", "{}", True)),
        reply("", ToolCallPart("", "e", "{}", True)),
        UserPrompt("and?"),
    ]

    messages = build(items)

    ids = [c.id for m in messages for c in m.tool_calls]
    assert ids == ["x", "x_2", "x_3", "tool_call_1", "call"]
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in ids)
    assert_api_shape(messages)


def test_repair_of_repeated_ids_is_deterministic() -> None:
    def conversation():
        return [
            UserPrompt("a", id="1"),
            reply("", ToolCallPart("call_0", "echo", "{}", complete=True)),
            ToolResult("call_0", "echo", "r1", id="r1"),
            reply("", ToolCallPart("call_0", "echo", "{}", complete=True)),
            ToolResult("call_0", "echo", "r2", id="r2"),
            UserPrompt("b", id="2"),
        ]

    assert history_bytes(build(conversation())) == history_bytes(build(conversation()))
    assert b"call_0_2" in history_bytes(build(conversation()))


def test_a_blank_reply_is_left_out_and_a_blank_text_beside_calls_is_dropped() -> None:
    call = ToolCallPart("c1", "echo", "{}", complete=True)
    items = [
        UserPrompt("one"),
        reply(" \n\n"),
        UserPrompt("two"),
        reply("\n", call),
        ToolResult("c1", "echo", "ok"),
    ]
    messages = build(items)
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[0].content == "one\n\ntwo"  # Merged: no blank assistant in between.
    assert messages[1].content == "" and messages[1].tool_calls[0].id == "c1"
    assert_api_shape(messages)


def test_a_stored_conversation_with_repeated_ids_pairs_each_result_with_its_own_call(
    store: Store,
) -> None:
    """What the screen shows under each call (`pair_results`) is what the model was sent."""
    conversation = store.create_conversation()
    for item in [
        UserPrompt("read a, then b and c"),
        reply("", ToolCallPart("call_0", "read", "a", complete=True)),
        ToolResult("call_0", "read", "A"),
        reply(
            "", ToolCallPart("call_0", "read", "b", True), ToolCallPart("call_0", "read", "c", True)
        ),
        ToolResult("call_0", "read", "B"),
        ToolResult("call_0", "read", "C"),
        reply("and d", ToolCallPart("call_0", "read", "d", complete=True)),  # Stopped: no result.
        UserPrompt("and?"),
    ]:
        store.save_item(conversation.id, item)
    items = store.load_conversation(conversation.id).items

    paired = pair_results(items)

    shown = {items[n].tool_calls[k].arguments: r.content for (n, k), r in paired.items()}  # type: ignore[union-attr]
    assert shown == {"a": "A", "b": "B", "c": "C"}
    messages = build(items)
    sent = {c.id: c.arguments for m in messages for c in m.tool_calls}
    answers = {sent[m.tool_call_id]: m.content for m in messages if m.role == "tool"}
    assert answers == {**shown, "d": CANCELLED_TOOL_RESULT}
    assert_api_shape(messages)


# interrupted_reply = "keep": the model sees what it had said, never its calls


def keep(items, **kwargs) -> list[ChatMessage]:
    return build_history(items, interrupted_note=NOTE, interrupted_reply="keep", **kwargs)


def test_keep_sends_an_interrupted_replys_text_marked_as_interrupted() -> None:
    items = [
        UserPrompt("write a poem"),
        reply("Roses are \n", state=ResponseState.INTERRUPTED),
        UserPrompt("shorter please"),
    ]

    messages = keep(items)

    assert messages == [
        ChatMessage("user", "write a poem"),
        ChatMessage("assistant", f"Roses are\n\n{KEPT_REPLY_NOTE}"),
        ChatMessage("user", "shorter please"),  # The reply says it was cut: no note here.
    ]
    assert_api_shape(messages)


def test_keep_never_sends_a_tool_call_of_an_interrupted_reply() -> None:
    whole = ToolCallPart("c1", "echo", "{}", complete=True)  # Whole, but it never ran.
    cut = ToolCallPart("c2", "search", '{"query": "wea', complete=False)
    items = [
        UserPrompt("weather?"),
        reply("Let me look.", whole, cut, state=ResponseState.INTERRUPTED),
        ToolResult("c1", "echo", "late"),
        UserPrompt("never mind"),
    ]

    messages = keep(items)

    assert messages == [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", f"Let me look.\n\n{KEPT_REPLY_NOTE}"),
        ChatMessage("user", "never mind"),
    ]
    assert_api_shape(messages)


def test_keep_drops_an_interrupted_reply_without_text_and_notes_the_next_prompt() -> None:
    cut = ToolCallPart("c1", "search", '{"q', complete=False)
    items = [
        UserPrompt("one"),
        reply(" \n", cut, state=ResponseState.INTERRUPTED),
        UserPrompt("two"),
        reply("par", state=ResponseState.FAILED),  # Failed, not stopped: left out, no note.
        UserPrompt("three"),
    ]

    assert keep(items) == [ChatMessage("user", f"one\n\n{NOTE}\n\ntwo\n\nthree")]


def test_drop_is_the_default_and_sends_the_same_bytes() -> None:
    items = [
        UserPrompt("x", id="1"),
        reply("par", ToolCallPart("c0", "e", "{", complete=False), state=ResponseState.INTERRUPTED),
        UserPrompt("y", id="2"),
        reply("ok", ToolCallPart("c1", "echo", '{"a": 1}', complete=True)),
        ToolResult("c1", "echo", "one"),
        UserPrompt("z", id="3"),
    ]

    dropped = build_history(items, interrupted_note=NOTE, interrupted_reply="drop")

    assert history_bytes(dropped) == history_bytes(build(items))
    assert history_bytes(keep(items)) != history_bytes(dropped)


# Continuing a reply: the history before it, then its text as the assistant's


def test_continuing_ends_with_the_replys_text_alone_after_the_repaired_history() -> None:
    earlier = ToolCallPart("c1", "echo", "{}", complete=True)
    cut = ToolCallPart("c2", "search", '{"q": "ro', complete=False)
    partial = ModelResponse(
        "p",
        "m",
        parts=[ThinkingPart("hm", signature="sig"), TextPart("Roses are "), cut],
        state=ResponseState.INTERRUPTED,
    )
    items = [
        UserPrompt("go"),
        reply("", earlier),  # Its run was stopped: a cancelled result.
        UserPrompt("a poem then"),
        partial,
    ]

    messages = build_history(items, system_prompt="s", interrupted_note=NOTE, continuing=partial)

    assert messages == [
        ChatMessage("system", "s"),
        ChatMessage("user", "go"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "echo", "{}"),)),
        ChatMessage("tool", CANCELLED_TOOL_RESULT, tool_call_id="c1", name="echo"),
        ChatMessage("user", "a poem then"),
        ChatMessage("assistant", "Roses are "),  # Text only: no thinking, no cut-off call.
    ]
    assert_api_shape(messages)


def test_continuing_a_reply_that_keep_would_send_sends_it_once() -> None:
    partial = reply("Once upon", state=ResponseState.INTERRUPTED)
    items = [UserPrompt("a story"), partial]

    assert keep(items, continuing=partial) == [
        ChatMessage("user", "a story"),
        ChatMessage("assistant", "Once upon"),
    ]


def test_continuing_composes_with_the_view_start() -> None:
    partial = reply("The end is", state=ResponseState.INTERRUPTED)
    items = [
        UserPrompt("old", id="old"),
        reply("old answer"),
        UserPrompt("new", id="new"),
        partial,
    ]

    messages = build_history(items, view_start="new", continuing=partial)

    assert messages == [
        ChatMessage("user", f"{TRIMMED_NOTE}\n\nnew"),
        ChatMessage("assistant", "The end is"),
    ]
