"""What only the OpenAI provider does, on the real `openai` SDK against a loopback server.

What both remote providers must do (a stop closes the stream in every state,
retries, failures in words) is tested once for both in
`test_remote_providers.py`. Here: how a history becomes Chat Completions
messages, the server's own check of them, a `base_url` without a key, and how
a reply is continued on each kind of server (vLLM, llama.cpp's server, any
other; `llama_cpp.server` in `test_llama_server.py`).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chatui.history import ChatMessage
from chatui.messages import ResponseState
from chatui.providers.openai_chat import continue_way, is_openai, to_openai_messages
from chatui.providers.remote import continue_instruction
from chatui.providers.served_window import ASK_TIMEOUT
from chatui.store import Store
from tests.support import openai_wire as ow
from tests.support.clocks import LoopClock
from tests.support.remote import WAIT, openai_at, request, settings, texts, when
from tests.support.turns import make_turn
from tests.support.wire import Gate, Validator, WireServer


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


# Continuing a reply: how depends on the server


HISTORY = [ChatMessage("user", "A poem?"), ChatMessage("assistant", "Roses are ")]
"""A reply cut short after "Roses are ", to continue."""
GO_ON = continue_instruction("Roses are")
"""The instruction that asks to continue `HISTORY`: it names the words to begin with again."""


def test_openai_itself_is_asked_by_instruction_and_the_setting_forces_either_way() -> None:
    assert is_openai("") and is_openai("https://api.openai.com/v1")
    assert not is_openai("http://127.0.0.1:8000/v1")
    ways = {
        (setting, kind): continue_way(setting, kind)
        for setting in ("auto", "prefill", "instruction")
        for kind in ("vllm", "llama.cpp", "unknown")
    }
    assert ways == {
        ("auto", "vllm"): "prefill",
        ("auto", "llama.cpp"): "prefill",
        ("auto", "unknown"): "instruction",
        **{("prefill", kind): "prefill" for kind in ("vllm", "llama.cpp", "unknown")},
        **{("instruction", kind): "instruction" for kind in ("vllm", "llama.cpp", "unknown")},
    }


async def test_a_server_that_says_nothing_of_itself_is_asked_to_continue_by_instruction(
    server: WireServer,
) -> None:
    """As OpenAI is: the strict check refuses any field OpenAI does not know."""
    server.play(ow.reply(" red."))
    provider = openai_at(server.base_url)

    events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["messages"] == [
        {"role": "user", "content": "A poem?"},
        {"role": "assistant", "content": "Roses are"},
        {"role": "user", "content": GO_ON},
    ]
    assert "Roses are " + "".join(texts(events)) == "Roses are red."
    assert [g.path for g in server.gets] == ["/v1/models", "/props"]  # Asked what it is.
    await provider.close()


async def test_vllm_is_asked_to_continue_the_final_assistant_message() -> None:
    with WireServer(validate=ow.validate_vllm) as server:
        server.documents["/v1/models"] = ow.VLLM_MODELS
        server.play(ow.reply(" red."), ow.reply(" blue."))
        provider = openai_at(server.base_url)

        first = await request(provider, HISTORY, continuing=True)
        await request(provider, HISTORY, continuing=True)

    sent = server.requests[0]
    assert sent.refused is None, sent.refused
    assert sent.body["continue_final_message"] is True
    assert sent.body["add_generation_prompt"] is False
    assert sent.body["messages"][-1] == {"role": "assistant", "content": "Roses are"}
    assert texts(first) == ["red."]
    assert server.requests[1].refused is None
    assert [g.path for g in server.gets] == ["/v1/models"]  # Asked once, and it said enough.
    await provider.close()


async def test_vllm_refuses_a_final_assistant_message_without_continue_final_message() -> None:
    """The check itself: vLLM wants to be told, and OpenAI refuses vLLM's fields."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    prefill = {**body, "messages": [*body["messages"], {"role": "assistant", "content": "y"}]}
    told = {**prefill, "continue_final_message": True, "add_generation_prompt": False}
    assert "continue_final_message" in ow.validate_vllm(prefill)["error"]["message"]
    assert ow.validate_vllm(told) is None
    assert ow.validate_vllm({**told, "add_generation_prompt": True}) is not None
    assert ow.validate_vllm({**body, "continue_final_message": True}) is not None
    assert "Unrecognized request argument" in ow.validate(told)["error"]["message"]


async def test_a_llama_cpp_server_continues_the_final_assistant_message_with_thinking_off() -> None:
    """llama.cpp's server prefills a final assistant message by itself, but refuses to while
    the model thinks; the request turns thinking off."""
    with WireServer(validate=ow.llama_cpp_validator(thinking=True)) as server:
        server.documents["/props"] = ow.LLAMA_CPP_PROPS
        server.play(ow.reply("red."))
        provider = openai_at(server.base_url)

        events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["messages"][-1] == {"role": "assistant", "content": "Roses are"}
    assert sent.body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "continue_final_message" not in sent.body
    assert "Roses are " + "".join(texts(events)) == "Roses are red."
    await provider.close()


@pytest.mark.parametrize(
    ("setting", "documents", "validate", "prefilled"),
    [
        ("instruction", {"/v1/models": ow.VLLM_MODELS}, ow.validate_vllm, False),
        ("prefill", {}, ow.validate, True),
    ],
    ids=["instruction-on-vllm", "prefill-on-an-unknown-server"],
)
async def test_continue_with_forces_either_way(
    setting: str, documents: dict[str, Any], validate: Validator, prefilled: bool
) -> None:
    with WireServer(validate=validate) as server:
        server.documents.update(documents)
        server.play(ow.reply("red."))
        provider = openai_at(server.base_url, continue_with=setting)

        await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    last = sent.body["messages"][-1]
    assert last == (
        {"role": "assistant", "content": "Roses are"}
        if prefilled
        else {"role": "user", "content": GO_ON}
    )
    assert "continue_final_message" not in sent.body  # Only vLLM is told, and only to prefill.
    await provider.close()


LISTINGS = {
    "a-gateway": [
        {"id": "local-llama", "object": "model", "owned_by": "vllm", "max_model_len": 4096},
        {"id": "wire-model", "object": "model", "owned_by": "openai"},
    ],
    "sglang": [{"id": "wire-model", "object": "model", "owned_by": "sglang", "max_model_len": 8}],
}
"""`/v1/models` answers in which the model asked for is not vLLM's, though vLLM's marks show."""


@pytest.mark.parametrize("listed", LISTINGS.values(), ids=LISTINGS.keys())
async def test_only_the_models_own_entry_says_which_server_answers_it(
    server: WireServer, listed: list[dict[str, Any]]
) -> None:
    """A gateway may list a vLLM model beside this one, and SGLang lists `max_model_len` as
    vLLM does: neither takes vLLM's fields (OpenAI's own check refuses them)."""
    server.documents["/v1/models"] = {"object": "list", "data": listed}
    server.play(ow.reply(" red."))
    provider = openai_at(server.base_url)

    events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["messages"][-1] == {"role": "user", "content": GO_ON}
    assert texts(events) == ["red."]
    await provider.close()


async def test_a_server_that_refuses_the_prefill_fields_is_asked_by_instruction_from_then_on(
    server: WireServer,
) -> None:
    """It says it is vLLM, but something in front of it checks as OpenAI does."""
    server.documents["/v1/models"] = ow.VLLM_MODELS
    server.play(ow.reply("red."), ow.reply("blue."))
    provider = openai_at(server.base_url)

    first = await request(provider, HISTORY, continuing=True)
    second = await request(provider, HISTORY, continuing=True)

    refused, *asked = server.requests
    assert "Unrecognized request argument" in str(refused.refused)
    assert len(asked) == 2
    for sent in asked:
        assert sent.refused is None, sent.refused
        assert sent.body["messages"][-1] == {"role": "user", "content": GO_ON}
    assert texts(first) == ["red."] and texts(second) == ["blue."]
    await provider.close()


async def test_a_stop_while_the_server_is_asked_what_it_is_ends_at_once_and_asks_again() -> None:
    """Esc during the question (a server that does not answer it) stops the request at once,
    and leaves nothing learnt: the next continue asks again, and prefills on vLLM."""
    opened = threading.Event()
    with WireServer(validate=ow.validate_vllm) as server:
        server.documents["/v1/models"] = Gate(opened)
        server.play(ow.reply("red."))
        provider = openai_at(server.base_url)

        asking = asyncio.ensure_future(request(provider, HISTORY, continuing=True))
        await when(lambda: len(server.gets) == 1)
        asking.cancel()
        await asyncio.wait({asking}, timeout=WAIT)
        assert asking.cancelled()
        await when(lambda: server.gets[0].disconnected)  # The question itself was dropped.
        assert server.requests == []

        server.documents["/v1/models"] = ow.VLLM_MODELS
        events = await request(provider, HISTORY, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert sent.body["continue_final_message"] is True
    assert [g.path for g in server.gets] == ["/v1/models", "/v1/models"]
    assert texts(events) == ["red."]
    opened.set()
    await provider.close()


async def test_a_server_that_never_says_what_it_is_holds_a_continue_no_longer_than_the_ask(
    server: WireServer,
) -> None:
    """The question has its own deadline (`ASK_TIMEOUT`): then the server is "unknown", and
    the continue goes by instruction."""
    opened = threading.Event()
    server.documents["/v1/models"] = Gate(opened)
    server.play(ow.reply("red."))
    provider = openai_at(server.base_url)
    clock = LoopClock()

    asking = asyncio.ensure_future(request(provider, HISTORY, continuing=True))
    await when(lambda: len(server.gets) == 1)
    await clock.advance(ASK_TIMEOUT)
    events = await asyncio.wait_for(asking, WAIT)

    (sent,) = server.requests
    assert sent.body["messages"][-1] == {"role": "user", "content": GO_ON}
    assert texts(events) == ["red."]
    opened.set()
    await provider.close()
