"""What only the Anthropic provider does, on the real `anthropic` SDK against a loopback server.

What both remote providers must do (a stop closes the stream in every state,
retries, failures in words) is tested once for both in
`test_remote_providers.py`. Here: how a history becomes Messages API
messages, the server's own check of them, Anthropic's "overloaded" (529), and
how a reply is continued (a prefill, or an instruction while thinking is on).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chatui.history import ChatMessage, ToolCall
from chatui.messages import ResponseState
from chatui.providers.anthropic_messages import to_anthropic_messages
from chatui.providers.base import ProviderError, RetryWait
from chatui.providers.remote import continue_instruction
from chatui.store import Store
from tests.support import anthropic_wire as aw
from tests.support.remote import anthropic_at, request, settings, texts
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


# Continuing a reply: a prefill, unless thinking is on

HISTORY = [ChatMessage("user", "A poem?"), ChatMessage("assistant", "Roses are ")]
"""A reply cut short after "Roses are ", to continue."""
GO_ON = continue_instruction("Roses are")
"""The instruction that asks to continue `HISTORY`: it names the words to begin with again."""


def message(role: str, text: str) -> dict[str, Any]:
    """A Messages API message of one text block, as the provider sends it."""
    return {"role": role, "content": [{"type": "text", "text": text}]}


SENT = [message("user", "A poem?"), message("assistant", "Roses are")]
"""`HISTORY` as it is sent: the partial without its trailing space."""


def test_the_server_validation_refuses_what_the_api_refuses_of_a_prefill() -> None:
    """The check itself: trailing whitespace, and any prefill while thinking is on."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "text", "text": "Roses are "}]},
    ]
    body = {"max_tokens": 2000, "messages": messages}
    refused = aw.validate(body)
    assert refused is not None
    assert "final assistant content cannot end with trailing whitespace" in str(refused)
    messages[1]["content"][0]["text"] = "Roses are"
    assert aw.validate(body) is None
    thinking = {**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert "must start with a thinking block" in str(aw.validate(thinking))


async def test_continuing_prefills_the_partial_and_the_seam_loses_no_space(
    server: WireServer,
) -> None:
    server.play(aw.reply(" red", " and blue."))
    provider = anthropic_at(server.base_url)

    events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["messages"] == SENT
    assert texts(events) == ["red", " and blue."]  # The space the partial ends with: once.
    await provider.close()


@pytest.mark.parametrize(
    "config",
    [{"thinking_budget": 1024, "max_tokens": 2048}, {"continue_with": "instruction"}],
    ids=["thinking-on", "instruction-set"],
)
async def test_continuing_asks_by_instruction_while_thinking_or_when_set_to(
    server: WireServer, config: dict[str, Any]
) -> None:
    server.play([*aw.start(), *aw.text_block(0, "red."), *aw.ending()])
    provider = anthropic_at(server.base_url, **config)

    events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["messages"] == [*SENT, message("user", GO_ON)]
    assert ("thinking" in sent.body) == ("thinking_budget" in config)
    assert "Roses are " + "".join(texts(events)) == "Roses are red."
    await provider.close()


async def test_a_model_that_refuses_a_prefill_is_asked_by_instruction_from_then_on() -> None:
    """Claude 4.6 and later refuse any prefill (a 400): "auto" asks by instruction then, at
    once and in the same request, and for every continue after it."""
    with WireServer(validate=aw.validate_without_prefill) as server:
        server.play(aw.reply("red."), aw.reply("blue."))
        provider = anthropic_at(server.base_url)

        first = await request(provider, HISTORY, continuing=True)
        second = await request(provider, HISTORY, continuing=True)

    refused, *asked = server.requests
    assert refused.refused is not None and aw.PREFILL_REFUSED in str(refused.refused)
    for sent in asked:
        assert sent.refused is None, sent.refused
        assert sent.body["messages"][-1] == message("user", GO_ON)
    assert len(asked) == 2  # The second continue did not try the prefill again.
    assert texts(first) == ["red."] and texts(second) == ["blue."]
    await provider.close()


async def test_a_refused_prefill_set_by_the_user_is_shown_in_words() -> None:
    """`continue_with = "prefill"` is the user's choice: no fallback, the API's words shown."""
    with WireServer(validate=aw.validate_without_prefill) as server:
        provider = anthropic_at(server.base_url, continue_with="prefill")

        with pytest.raises(ProviderError) as failed:
            await request(provider, HISTORY, continuing=True)

    assert len(server.requests) == 1
    assert "Anthropic rejected the request (400)" in str(failed.value)
    assert aw.PREFILL_REFUSED in str(failed.value)
    await provider.close()
