"""The OpenAI provider on the real `openai` SDK, against a loopback Chat Completions server.

The server (`wire.WireServer` with `openai_wire.validate`) records every
request and the moment the client disconnected: a stop must close the stream
for real in every state, and the next request must pass the API's checks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import openai
import pytest

from chatui.config import OpenAIConfig
from chatui.messages import ModelResponse, ResponseState, ToolCallPart
from chatui.providers.base import RetryWait, TextDelta, ToolCallDelta
from chatui.providers.openai_chat import OpenAIProvider, to_openai_messages
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage, ErrorNotice
from chatui.widgets.status_bar import StatusBar
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.clocks import LoopClock
from tests.support.remote import (
    SECRET,
    WAIT,
    assert_no_secret,
    disconnected,
    openai_at,
    retry_waits,
    run_skipping_retry_waits,
    settings,
    when,
)
from tests.support.turns import make_turn, stored
from tests.support.wire import DROP, STALL, Error, Gate, Headers, Raw, WireServer


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as wire:
        yield wire


async def test_a_streamed_reply_is_stored_with_its_usage(server: WireServer, store: Store) -> None:
    server.play(ow.reply("Hello", ", ", "world."))
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert sink.texts == ["Hello", ", ", "world."]
    response = stored(store, turn)[-1]
    assert response.text == "Hello, world." and response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 5)
    assert not response.usage.estimated
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["model"] == "wire-model"
    assert request.body["messages"][-1] == {"role": "user", "content": "hi"}
    await provider.close()


async def test_esc_while_the_reader_waits_on_a_stalled_server_closes_the_stream(
    server: WireServer, store: Store
) -> None:
    server.play([*ow.text("Once ", "upon "), STALL], ow.reply("Again."))
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: len(sink.texts) == 2)

    assert turn.cancel()
    outcome = await task
    await disconnected(server)

    assert outcome.state is ResponseState.INTERRUPTED
    assert sink.after_stop == 0
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.INTERRUPTED and response.text == "Once upon "
    assert response.usage.estimated  # No usage came: estimated, and flagged.

    # The next turn: accepted by the API's checks, and without the interrupted reply.
    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    body = server.requests[1].body
    assert server.requests[1].refused is None
    assert all("Once upon" not in (m.get("content") or "") for m in body["messages"])
    assert "interrupted" in body["messages"][-1]["content"]
    await provider.close()


async def test_esc_before_the_response_headers_closes_the_connection(
    server: WireServer, store: Store
) -> None:
    server.play([STALL])  # Not even a status line.
    provider = openai_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await asyncio.to_thread(server.wait_for_request, 1)

    assert turn.cancel()
    outcome = await task
    await disconnected(server)
    assert outcome.state is ResponseState.INTERRUPTED
    assert stored(store, turn)[-1].text == ""
    await provider.close()


async def test_esc_after_create_returned_but_before_the_first_chunk_closes_the_stream(
    server: WireServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measured trap: a stream cancelled before its first read never closed by itself."""
    server.play([Headers(), STALL])
    returned = asyncio.Event()
    completions = openai.resources.chat.completions.AsyncCompletions
    create = completions.create

    async def create_and_tell(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        stream = await create(self, *args, **kwargs)
        returned.set()
        return stream

    monkeypatch.setattr(completions, "create", create_and_tell)
    provider = openai_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await asyncio.wait_for(returned.wait(), WAIT)

    assert turn.cancel()  # Before the reader has asked for a chunk.
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    await provider.close()


async def test_esc_in_a_tool_calls_arguments_keeps_it_cut_off_and_out_of_the_history(
    server: WireServer, store: Store
) -> None:
    call = ow.tool_call(0, "call_abc", "read_file", '{"pa', 'th": "no')
    server.play([*ow.text("Let me look."), *call, STALL], ow.reply("Fine."))
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: sum(isinstance(e.payload, ToolCallDelta) for e in sink.events) == 2)

    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    response = stored(store, turn)[-1]
    (part,) = response.tool_calls
    assert isinstance(part, ToolCallPart)
    assert (part.id, part.name, part.arguments, part.complete) == (
        "call_abc",
        "read_file",
        '{"path": "no',
        False,
    )

    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    request = server.requests[1]
    assert request.refused is None
    assert "call_abc" not in json.dumps(request.body)
    await provider.close()


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


async def test_the_earlier_messages_keep_their_bytes_from_turn_to_turn_after_a_stop(
    server: WireServer, store: Store
) -> None:
    server.play(ow.reply("First answer."), [*ow.text("Cut "), STALL], ow.reply("Third."))
    provider = openai_at(server.base_url)
    first, _ = make_turn(store, provider, settings=settings(), prompt="one")
    await first.run()
    conversation = first.conversation
    second, sink = make_turn(
        store, provider, conversation=conversation, settings=settings(), prompt="two"
    )
    task = asyncio.create_task(second.run())
    await when(lambda: bool(sink.texts))
    second.cancel()
    await task
    third, _ = make_turn(
        store, provider, conversation=conversation, settings=settings(), prompt="three"
    )
    await third.run()

    sent = [r.body["messages"] for r in server.requests]
    assert json.dumps(sent[1][:2]) == json.dumps(sent[2][:2])  # "one" and its answer.
    assert sent[0] == sent[1][:1]
    assert sent[2][2]["content"].startswith("two\n\n[The user interrupted")  # Kept, noted.
    await provider.close()


async def test_a_429_is_retried_after_its_retry_after_and_shown_as_a_wait(
    server: WireServer, store: Store
) -> None:
    server.play([Error(429, {"error": {"message": "slow down"}}, {"retry-after": "0"})])
    server.play(ow.reply("Done."))
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    assert (await turn.run()).state is ResponseState.COMPLETE
    waits = [e.payload for e in sink.events if isinstance(e.payload, RetryWait)]
    assert waits == [RetryWait(0.0, "429")]
    assert len(server.requests) == 2
    await provider.close()


async def test_a_retry_after_longer_than_the_cap_is_not_waited_for(
    server: WireServer, store: Store
) -> None:
    server.play([Error(429, {"error": {"message": "quota"}}, {"retry-after": "3600"})])
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "429" in outcome.error and "quota" in outcome.error
    assert len(server.requests) == 1
    assert not any(isinstance(e.payload, RetryWait) for e in sink.events)
    await provider.close()


async def test_esc_during_a_retry_wait_ends_it_at_once(server: WireServer, store: Store) -> None:
    server.play([Error(503, {"error": {"message": "busy"}}, {"retry-after": "15"})])
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: any(isinstance(e.payload, RetryWait) for e in sink.events))

    turn.cancel()
    outcome = await asyncio.wait_for(task, 2)  # Far less than the 15 s wait.
    assert outcome.state is ResponseState.INTERRUPTED
    assert len(server.requests) == 1
    await provider.close()


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (400, "rejected the request (400)"),
        (401, "OPENAI_API_KEY"),
        (403, "(403)"),
        (404, "'wire-model'"),
        (413, "too large"),
        (500, "server error (500)"),
    ],
)
async def test_an_http_error_is_a_clear_failed_outcome(
    server: WireServer, store: Store, status: int, words: str
) -> None:
    body = {"error": {"message": f"details for {status}", "type": "x"}}
    server.play(*[[Error(status, body, {"retry-after": "0"})]] * 3)
    provider = openai_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert words in outcome.error and f"details for {status}" in outcome.error
    assert len(server.requests) == (3 if status == 500 else 1)  # 500: two retries.
    assert stored(store, turn)[-1].state is ResponseState.FAILED
    assert_no_secret(store, outcome.error)
    await provider.close()


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([*ow.text("Half "), Raw(b"data: {not json\n\n")], "not JSON"),
        ([*ow.text("Half "), DROP], "dropped"),
        ([*ow.text("Half ")], "ended before the reply did"),
        ([*ow.text("Half "), Raw(b'data: {"error": {"message": "boom"}}\n\n')], "boom"),
    ],
    ids=["not-json", "dropped", "just-ends", "error-event"],
)
async def test_a_broken_stream_fails_the_turn_with_the_partial_kept(
    server: WireServer, store: Store, steps: list, words: str
) -> None:
    server.play(steps)
    provider = openai_at(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED, outcome.error
    assert words in outcome.error
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.FAILED and response.text == "Half "
    assert len(server.requests) == 1  # A reply that had begun is never retried.
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_a_silent_stall_ends_at_the_idle_timeout(server: WireServer, store: Store) -> None:
    clock = LoopClock()
    server.play([*ow.text("Hm"), STALL])
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings(idle_timeout=60))
    task = asyncio.create_task(turn.run())
    await when(lambda: sink.texts == ["Hm"])  # The server is silent from here on.

    await clock.advance(61)
    outcome = await asyncio.wait_for(task, WAIT)

    assert outcome.state is ResponseState.FAILED
    assert "sent nothing for 60 s" in outcome.error
    await disconnected(server)
    await provider.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_retried_then_explained(store: Store) -> None:
    base_url = f"http://127.0.0.1:{_free_port()}/v1"
    provider = OpenAIProvider(OpenAIConfig(api_key=SECRET, base_url=base_url))
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await run_skipping_retry_waits(turn.run(), sink)

    assert outcome.state is ResponseState.FAILED
    assert "connection refused" in outcome.error and base_url in outcome.error
    assert retry_waits(sink) == [RetryWait(1.0, "no connection"), RetryWait(2.0, "no connection")]
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_a_tls_failure_is_explained(store: Store) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_in_plain_http() -> None:  # To a TLS hello: not TLS at all.
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_in_plain_http, daemon=True).start()
    base_url = f"https://127.0.0.1:{port}/v1"
    provider = OpenAIProvider(OpenAIConfig(api_key=SECRET, base_url=base_url))
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "TLS" in outcome.error, outcome.error
    await provider.close()
    listener.close()


async def test_no_key_and_no_base_url_names_the_variable_and_the_config_key(
    store: Store,
) -> None:
    provider = OpenAIProvider(OpenAIConfig(api_key="", base_url=""))
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "OPENAI_API_KEY" in outcome.error and "[openai]" in outcome.error


async def test_a_base_url_without_a_key_sends_a_placeholder(
    server: WireServer, store: Store
) -> None:
    server.play(ow.reply("Local."))
    provider = openai_at(server.base_url, api_key="")
    turn, _ = make_turn(store, provider, settings=settings())

    assert (await turn.run()).state is ResponseState.COMPLETE
    assert server.requests[0].headers["authorization"] == "Bearer no-key"
    await provider.close()


async def test_a_gated_reply_streams_as_it_is_released(server: WireServer, store: Store) -> None:
    """Text is shown as it arrives, not when the reply ends."""
    gate = threading.Event()
    server.play([*ow.text("first "), Gate(gate), *ow.reply("second")])
    provider = openai_at(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: sink.texts == ["first "])
    assert isinstance(turn.conversation.items[-1], ModelResponse)
    assert turn.conversation.items[-1].text == "first "

    gate.set()
    assert (await task).state is ResponseState.COMPLETE
    assert [type(e.payload) for e in sink.events].count(TextDelta) == 2
    await provider.close()


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


async def test_an_error_is_shown_inline_without_the_key(server: WireServer, store: Store) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "x"}}
    server.play([Error(401, body)])
    app = make_app(store, openai_at(server.base_url))
    async with app.run_test() as pilot:
        await send(pilot, "hello")
        await wait_until(pilot, settled(app))

        (notice,) = app.screen.query(ErrorNotice)
        shown = str(notice.render())
        assert "refused the API key (401)" in shown and "OPENAI_API_KEY" in shown
        assert SECRET not in shown and "***" in shown  # The server echoed it: redacted.
        assert app.screen.query_one(StatusBar).state == "failed"
        (view,) = app.screen.query(AssistantMessage)
        assert "-failed" in view.classes
    assert_no_secret(store, app.last_outcome.error)
