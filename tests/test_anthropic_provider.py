"""What only the Anthropic provider does, on the real `anthropic` SDK against a loopback server.

What both remote providers must do (a stop closes the stream in every state,
retries, failures in words) is tested once for both in
`test_remote_providers.py`. Here: how a history becomes Messages API
messages, the server's own check of them, and Anthropic's "overloaded" (529).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chatui.history import ChatMessage, ToolCall
from chatui.messages import ResponseState
from chatui.providers.anthropic_messages import to_anthropic_messages
from chatui.providers.base import RetryWait
from chatui.store import Store
from tests.support import anthropic_wire as aw
from tests.support.remote import anthropic_at, settings
from tests.support.turns import make_turn
from tests.support.wire import Error, WireServer


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer(validate=aw.validate) as wire:
        yield wire


def test_tool_results_go_in_one_user_message_before_the_next_prompt() -> None:
    history = [
        ChatMessage("system", "sys"),
        ChatMessage("user", "Two files?"),
        ChatMessage(
            "assistant",
            "Reading.",
            tool_calls=(ToolCall("a", "read", '{"p": 1}'), ToolCall("b", "read", "{bad")),
        ),
        ChatMessage("tool", "one", tool_call_id="a"),
        ChatMessage("tool", "two", tool_call_id="b"),
        ChatMessage("user", "Thanks."),
    ]
    system, messages = to_anthropic_messages(history)
    assert system == "sys"
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "tool_result", "text"]
    assert messages[1]["content"][1]["input"] == {"p": 1}
    assert messages[1]["content"][2]["input"] == {}  # Arguments that were not JSON.
    assert aw.validate({"max_tokens": 1, "messages": messages}) is None
    assert json.dumps(to_anthropic_messages(history)) == json.dumps((system, messages))


def test_the_server_validation_refuses_a_tool_use_without_its_result() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        },
        {"role": "user", "content": "y"},
    ]
    assert "t" in aw.validate({"max_tokens": 1, "messages": messages})["error"]["message"]
    messages[2]["content"] = [{"type": "tool_result", "tool_use_id": "t", "content": "r"}]
    assert aw.validate({"max_tokens": 1, "messages": messages}) is None
    messages[2]["content"][0]["tool_use_id"] = "other"
    assert aw.validate({"max_tokens": 1, "messages": messages}) is not None


async def test_overloaded_is_retried_then_shown(server: WireServer, store: Store) -> None:
    body = aw.error_body("overloaded_error", "Overloaded")
    server.play(*[[Error(529, body, {"retry-after": "0"})]] * 3)
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "overloaded (529)" in outcome.error
    assert [e.payload.reason for e in sink.events if isinstance(e.payload, RetryWait)] == [
        "529",
        "529",
    ]
    assert len(server.requests) == 3
    await provider.close()
