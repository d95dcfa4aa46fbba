"""What only the OpenAI provider does, on the real `openai` SDK against a loopback server.

What both remote providers must do (a stop closes the stream in every state,
retries, failures in words) is tested once for both in
`test_remote_providers.py`. Here: how a history becomes Chat Completions
messages, the server's own check of them, and a `base_url` without a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chatui.messages import ResponseState
from chatui.providers.openai_chat import to_openai_messages
from chatui.store import Store
from tests.support import openai_wire as ow
from tests.support.remote import openai_at, settings
from tests.support.turns import make_turn
from tests.support.wire import WireServer


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as wire:
        yield wire


async def test_a_completed_tool_call_is_sent_back_with_one_tool_message_per_call() -> None:
    from chatui.history import ChatMessage, ToolCall

    messages = [
        ChatMessage("user", "Two files?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(ToolCall("a", "read", '{"p": 1}'), ToolCall("b", "read", "not json")),
        ),
        ChatMessage("tool", "one", tool_call_id="a", name="read"),
        ChatMessage("tool", "two", tool_call_id="b", name="read"),
        ChatMessage("user", "Thanks."),
    ]
    converted = to_openai_messages(messages)
    assert ow.validate({"messages": converted}) is None
    assert converted[1]["content"] is None
    assert [c["function"]["arguments"] for c in converted[1]["tool_calls"]] == ['{"p": 1}', "{}"]
    assert [m["tool_call_id"] for m in converted[2:4]] == ["a", "b"]
    # Deterministic: the same history, the same bytes (prompt caches keep working).
    assert json.dumps(to_openai_messages(messages)) == json.dumps(converted)


async def test_the_server_validation_refuses_a_dangling_tool_call(server: WireServer) -> None:
    """The check itself: OpenAI refuses tool_calls without their tool messages."""
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "y"},
        ],
    }
    assert "c1" in ow.validate(body)["error"]["message"]
    body["messages"].insert(2, {"role": "tool", "tool_call_id": "c1", "content": "r"})
    assert ow.validate(body) is None


async def test_a_base_url_without_a_key_sends_a_placeholder(
    server: WireServer, store: Store
) -> None:
    server.play(ow.reply("Local."))
    provider = openai_at(server.base_url, api_key="")
    turn, _ = make_turn(store, provider, settings=settings())

    assert (await turn.run()).state is ResponseState.COMPLETE
    assert server.requests[0].headers["authorization"] == "Bearer no-key"
    await provider.close()
