"""The Anthropic provider on the real `anthropic` SDK, against a loopback Messages server.

As for OpenAI (`test_openai_provider.py`): the server records each request
and when the client left; every stop must close the stream for real, and the
next request must pass the API's own checks (`anthropic_wire.validate`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator

import anthropic
import pytest

from chatui.config import AnthropicConfig
from chatui.history import ChatMessage, ToolCall
from chatui.messages import ResponseState
from chatui.providers.anthropic_messages import AnthropicProvider, to_anthropic_messages
from chatui.providers.base import RetryWait, ToolCallDelta
from chatui.store import Store
from tests.support import anthropic_wire as aw
from tests.support.clocks import LoopClock
from tests.support.remote import (
    SECRET,
    WAIT,
    anthropic_at,
    assert_no_secret,
    disconnected,
    retry_waits,
    run_skipping_retry_waits,
    settings,
    when,
)
from tests.support.turns import make_turn, stored
from tests.support.wire import DROP, STALL, Error, Headers, Raw, Send, WireServer


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer(validate=aw.validate) as wire:
        yield wire


async def test_a_streamed_reply_is_stored_with_its_usage(server: WireServer, store: Store) -> None:
    server.play(aw.reply("Hello", ", world.", input_tokens=12, output_tokens=4))
    provider = anthropic_at(server.base_url, max_tokens=321)
    turn, sink = make_turn(store, provider, settings=settings(system_prompt="Be brief."))

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert sink.texts == ["Hello", ", world."]
    response = stored(store, turn)[-1]
    assert response.text == "Hello, world." and response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {SECRET}"  # How anthropic 2.x sends it.
    assert request.body["max_tokens"] == 321 and request.body["stream"] is True
    assert request.body["system"] == "Be brief."
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    ]
    await provider.close()


async def test_esc_while_the_reader_waits_on_a_stalled_server_closes_the_stream(
    server: WireServer, store: Store
) -> None:
    server.play(
        [*aw.start(), *aw.text_block(0, "Once ", "upon ", stop=False), STALL], aw.reply("Again.")
    )
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: len(sink.texts) == 2)

    assert turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.INTERRUPTED and response.text == "Once upon "
    assert response.usage.input_tokens == 10  # From message_start,
    assert response.usage.estimated  # and the output count estimated, flagged.

    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    assert server.requests[1].refused is None
    assert "Once upon" not in json.dumps(server.requests[1].body)
    await provider.close()


async def test_esc_before_the_response_headers_closes_the_connection(
    server: WireServer, store: Store
) -> None:
    server.play([STALL])
    provider = anthropic_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await asyncio.to_thread(server.wait_for_request, 1)

    assert turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    await provider.close()


async def test_esc_after_create_returned_but_before_the_first_chunk_closes_the_stream(
    server: WireServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.play([Headers(), STALL])
    returned = asyncio.Event()
    messages = anthropic.resources.messages.AsyncMessages
    create = messages.create

    async def create_and_tell(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        stream = await create(self, *args, **kwargs)
        returned.set()
        return stream

    monkeypatch.setattr(messages, "create", create_and_tell)
    provider = anthropic_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await asyncio.wait_for(returned.wait(), WAIT)

    assert turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    await provider.close()


async def test_esc_in_a_tool_uses_input_keeps_it_cut_off_and_out_of_the_history(
    server: WireServer, store: Store
) -> None:
    call = aw.tool_block(1, "toolu_1", "read_file", '{"pa', 'th": "no', stop=False)
    server.play([*aw.start(), *aw.text_block(0, "Let me look."), *call, STALL], aw.reply("Ok."))
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: sum(isinstance(e.payload, ToolCallDelta) for e in sink.events) == 2)

    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    (part,) = stored(store, turn)[-1].tool_calls
    assert (part.id, part.arguments, part.complete) == ("toolu_1", '{"path": "no', False)

    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    assert server.requests[1].refused is None
    assert "toolu_1" not in json.dumps(server.requests[1].body)
    await provider.close()


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


async def test_an_hour_long_retry_after_is_not_waited_for(server: WireServer, store: Store) -> None:
    body = aw.error_body("rate_limit_error", "slow down")
    server.play([Error(429, body, {"retry-after": "3600"})])
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "429" in outcome.error and "slow down" in outcome.error
    assert len(server.requests) == 1
    assert not any(isinstance(e.payload, RetryWait) for e in sink.events)
    await provider.close()


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


async def test_esc_during_a_retry_wait_ends_it_at_once(server: WireServer, store: Store) -> None:
    body = aw.error_body("overloaded_error", "Overloaded")
    server.play([Error(529, body, {"retry-after": "15"})])
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: any(isinstance(e.payload, RetryWait) for e in sink.events))

    turn.cancel()
    assert (await asyncio.wait_for(task, 2)).state is ResponseState.INTERRUPTED
    assert len(server.requests) == 1
    await provider.close()


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (400, "invalid_request_error", "rejected the request (400)"),
        (401, "authentication_error", "ANTHROPIC_API_KEY"),
        (403, "permission_error", "(403)"),
        (404, "not_found_error", "'wire-model'"),
        (413, "request_too_large", "too large"),
    ],
)
async def test_an_http_error_is_a_clear_failed_outcome(
    server: WireServer, store: Store, status: int, kind: str, words: str
) -> None:
    server.play([Error(status, aw.error_body(kind, f"details for {status}"))])
    provider = anthropic_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert words in outcome.error and f"details for {status}" in outcome.error
    assert_no_secret(store, outcome.error)
    await provider.close()


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([Raw(b"event: content_block_delta\ndata: {not json\n\n")], "not JSON"),
        ([DROP], "dropped"),
        ([], "ended before the reply did"),
        ([Send(aw.error_body("overloaded_error", "Overloaded"), event="error")], "overloaded"),
    ],
    ids=["not-json", "dropped", "just-ends", "error-event"],
)
async def test_a_broken_stream_fails_the_turn_with_the_partial_kept(
    server: WireServer, store: Store, steps: list, words: str
) -> None:
    server.play([*aw.start(), *aw.text_block(0, "Half ", stop=False), *steps])
    provider = anthropic_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED, outcome.error
    assert words in outcome.error, outcome.error
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.FAILED and response.text == "Half "
    assert len(server.requests) == 1
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_no_key_names_the_variable_and_the_config_key(store: Store) -> None:
    provider = AnthropicProvider(AnthropicConfig(api_key=""))
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "ANTHROPIC_API_KEY" in outcome.error and "[anthropic]" in outcome.error


async def test_a_500_is_retried_twice_then_explained(server: WireServer, store: Store) -> None:
    body = aw.error_body("api_error", "Internal server error")
    server.play(*[[Error(500, body, {"retry-after": "0"})]] * 3)
    provider = anthropic_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "server error (500)" in outcome.error and "Internal server error" in outcome.error
    assert len(server.requests) == 3
    await provider.close()


async def test_a_silent_stall_ends_at_the_idle_timeout(server: WireServer, store: Store) -> None:
    clock = LoopClock()
    server.play([*aw.start(), *aw.text_block(0, "Hm", stop=False), STALL])
    provider = anthropic_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings(idle_timeout=60))
    task = asyncio.create_task(turn.run())
    await when(lambda: sink.texts == ["Hm"])  # The server is silent from here on.

    await clock.advance(61)
    outcome = await asyncio.wait_for(task, WAIT)

    assert outcome.state is ResponseState.FAILED
    assert "sent nothing for 60 s" in outcome.error
    await disconnected(server)
    assert stored(store, turn)[-1].text == "Hm"
    await provider.close()


async def test_connection_refused_is_explained(store: Store) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    provider = AnthropicProvider(AnthropicConfig(api_key=SECRET, base_url=base_url))
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await run_skipping_retry_waits(turn.run(), sink)

    assert outcome.state is ResponseState.FAILED
    assert "connection refused" in outcome.error and base_url in outcome.error
    assert retry_waits(sink) == [RetryWait(1.0, "no connection"), RetryWait(2.0, "no connection")]
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_the_earlier_messages_keep_their_bytes_from_turn_to_turn_after_a_stop(
    server: WireServer, store: Store
) -> None:
    server.play(
        aw.reply("First answer."),
        [*aw.start(), *aw.text_block(0, "Cut ", stop=False), STALL],
        aw.reply("Third."),
    )
    provider = anthropic_at(server.base_url)
    first, _ = make_turn(store, provider, settings=settings(), prompt="one")
    await first.run()
    second, sink = make_turn(
        store, provider, conversation=first.conversation, settings=settings(), prompt="two"
    )
    task = asyncio.create_task(second.run())
    await when(lambda: bool(sink.texts))
    second.cancel()
    await task
    third, _ = make_turn(
        store, provider, conversation=first.conversation, settings=settings(), prompt="three"
    )
    await third.run()

    sent = [r.body["messages"] for r in server.requests]
    assert json.dumps(sent[1][:2]) == json.dumps(sent[2][:2])  # "one" and its answer.
    assert all(r.refused is None for r in server.requests)
    assert "Cut" not in json.dumps(sent[2])
    await provider.close()
