"""What both remote providers must do, each test run on the real `openai` and `anthropic` SDKs.

Each test runs once per API (`remote.WIRES`, ids "openai" and "anthropic")
against a loopback server (`wire.WireServer`) that checks each request as that
API does and records it, and when the client left: a stop must close the
stream for real in every state, the next request must pass the API's checks,
and every failure must be a clear sentence without the key. How each API
frames a reply, a call or an error is the `Wire`'s business, not the test's.
What only one API does is tested in `test_openai_provider.py` and
`test_anthropic_provider.py`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable

import pytest

from chatui.history import KEPT_REPLY_NOTE, ChatMessage, build_history
from chatui.messages import ModelResponse, ResponseState, TextPart, ToolCallPart, UserPrompt
from chatui.providers.base import (
    RetryWait,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
)
from chatui.providers.remote import continue_instruction, repeat_tail
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage, ErrorNotice
from chatui.widgets.status_bar import StatusBar
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.clocks import LoopClock
from tests.support.remote import (
    SECRET,
    WAIT,
    Wire,
    assert_no_secret,
    continue_turn,
    disconnected,
    request,
    retry_waits,
    run_and_stop_when,
    run_skipping_retry_waits,
    settings,
    texts,
    when,
)
from tests.support.turns import make_turn, stored
from tests.support.wire import DROP, STALL, Error, Gate, Headers, Step, WireServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A reply, and what was sent for it


async def test_a_streamed_reply_is_stored_with_its_usage(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play(wire.reply("Hello", ", ", "world.", input_tokens=12, output_tokens=4))
    provider = wire.provider(server.base_url, max_tokens=321)
    turn, sink = make_turn(store, provider, settings=settings(system_prompt="Be brief."))

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert sink.texts == ["Hello", ", ", "world."]
    response = stored(store, turn)[-1]
    assert response.text == "Hello, world." and response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    assert not response.usage.estimated
    (request,) = server.requests
    assert request.path == wire.path
    assert request.headers["authorization"] == f"Bearer {SECRET}"  # anthropic 2.x sends it so.
    assert {name: request.body.get(name) for name in wire.stream_fields} == wire.stream_fields
    assert request.body["model"] == "wire-model" and request.body["max_tokens"] == 321
    assert wire.prompt_of(request.body) == ("Be brief.", [wire.user("hi")])
    await provider.close()


async def test_a_gated_reply_streams_as_it_is_released(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """Text is shown as it arrives, not when the reply ends."""
    gate = threading.Event()
    server.play([*wire.opening("first ", cut=True), Gate(gate), *wire.rest("second")])
    provider = wire.provider(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: sink.texts == ["first "])
    assert isinstance(turn.conversation.items[-1], ModelResponse)
    assert turn.conversation.items[-1].text == "first "

    gate.set()
    assert (await task).state is ResponseState.COMPLETE
    assert [type(e.payload) for e in sink.events].count(TextDelta) == 2
    await provider.close()


# Esc closes the stream for real, in every state


async def test_esc_while_the_reader_waits_on_a_stalled_server_closes_the_stream(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play([*wire.opening("Once ", "upon ", cut=True), STALL], wire.reply("Again."))
    provider = wire.provider(server.base_url)
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
    assert response.usage.estimated  # The output count never came: estimated, and flagged.
    if wire.opening_input_tokens is not None:  # The input count came before the text.
        assert response.usage.input_tokens == wire.opening_input_tokens

    # The next turn: accepted by the API's checks, and without the interrupted reply.
    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    request = server.requests[1]
    assert request.refused is None
    assert "Once upon" not in json.dumps(request.body)
    assert "interrupted" in wire.text_of(request.body["messages"][-1])
    await provider.close()


async def test_esc_before_the_response_headers_closes_the_connection(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play([STALL])  # Not even a status line.
    provider = wire.provider(server.base_url)
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
    wire: Wire, server: WireServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measured trap: a stream cancelled before its first read never closed by itself."""
    server.play([Headers(), STALL])
    returned = asyncio.Event()
    create = wire.sdk_stream.create

    async def create_and_tell(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        stream = await create(self, *args, **kwargs)
        returned.set()
        return stream

    monkeypatch.setattr(wire.sdk_stream, "create", create_and_tell)
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await asyncio.wait_for(returned.wait(), WAIT)

    assert turn.cancel()  # Before the reader has asked for a chunk.
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    await provider.close()


async def test_esc_in_a_tool_calls_arguments_keeps_it_cut_off_and_out_of_the_history(
    wire: Wire, server: WireServer, store: Store
) -> None:
    call = wire.call(0, "call_abc", "read_file", '{"pa', 'th": "no', cut=True)
    server.play([*wire.opening("Let me look."), *call, STALL], wire.reply("Fine."))
    provider = wire.provider(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: sum(isinstance(e.payload, ToolCallDelta) for e in sink.events) == 2)

    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await disconnected(server)
    (part,) = stored(store, turn)[-1].tool_calls
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


async def test_the_earlier_messages_keep_their_bytes_from_turn_to_turn_after_a_stop(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play(
        wire.reply("First answer."), [*wire.opening("Cut ", cut=True), STALL], wire.reply("Third.")
    )
    provider = wire.provider(server.base_url)
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

    assert all(r.refused is None for r in server.requests)
    sent = [r.body["messages"] for r in server.requests]
    assert json.dumps(sent[1][:2]) == json.dumps(sent[2][:2])  # "one" and its answer.
    assert sent[0] == sent[1][:1]
    assert wire.text_of(sent[2][2]).startswith("two\n\n[The user interrupted")  # Kept, noted.
    assert "Cut" not in json.dumps(sent[2])
    await provider.close()


# Retries, and Esc during their waits


async def test_a_429_is_retried_after_its_retry_after_and_shown_as_a_wait(
    wire: Wire, server: WireServer, store: Store
) -> None:
    body = wire.error_body("rate_limit_error", "slow down")
    server.play([Error(429, body, {"retry-after": "0"})], wire.reply("Done."))
    provider = wire.provider(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    assert (await turn.run()).state is ResponseState.COMPLETE
    assert retry_waits(sink) == [RetryWait(0.0, "429")]
    assert len(server.requests) == 2
    await provider.close()


async def test_a_retry_after_longer_than_the_cap_is_not_waited_for(
    wire: Wire, server: WireServer, store: Store
) -> None:
    body = wire.error_body("rate_limit_error", "quota")
    server.play([Error(429, body, {"retry-after": "3600"})])
    provider = wire.provider(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "429" in outcome.error and "quota" in outcome.error
    assert len(server.requests) == 1
    assert retry_waits(sink) == []
    await provider.close()


async def test_esc_during_a_retry_wait_ends_it_at_once(
    wire: Wire, server: WireServer, store: Store
) -> None:
    body = wire.error_body("overloaded_error", "busy")
    server.play([Error(wire.busy, body, {"retry-after": "15"})])
    provider = wire.provider(server.base_url)
    turn, sink = make_turn(store, provider, settings=settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: bool(retry_waits(sink)))

    turn.cancel()
    outcome = await asyncio.wait_for(task, 2)  # Far less than the 15 s wait.
    assert outcome.state is ResponseState.INTERRUPTED
    assert len(server.requests) == 1
    await provider.close()


# Failures, each a clear sentence without the key


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (400, "invalid_request_error", "rejected the request (400)"),
        (401, "authentication_error", "{key_variable}"),
        (403, "permission_error", "(403)"),
        (404, "not_found_error", "'wire-model'"),
        (413, "request_too_large", "too large"),
        (500, "api_error", "server error (500)"),
    ],
)
async def test_an_http_error_is_a_clear_failed_outcome(
    wire: Wire, server: WireServer, store: Store, status: int, kind: str, words: str
) -> None:
    body = wire.error_body(kind, f"details for {status}")
    server.play(*[[Error(status, body, {"retry-after": "0"})]] * 3)
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert words.format(key_variable=wire.key_variable) in outcome.error
    assert f"details for {status}" in outcome.error
    assert len(server.requests) == (3 if status == 500 else 1)  # 500: two retries.
    assert stored(store, turn)[-1].state is ResponseState.FAILED
    assert_no_secret(store, outcome.error)
    await provider.close()


BROKEN: dict[str, tuple[Callable[[Wire], list[Step]], str]] = {
    "not-json": (lambda wire: [wire.not_json()], "not JSON"),
    "dropped": (lambda wire: [DROP], "dropped"),
    "just-ends": (lambda wire: [], "ended before the reply did"),
    "error-event": (lambda wire: [wire.error_event({"message": "boom"})], "boom"),
    "overloaded-event": (
        lambda wire: [wire.error_event({"type": "overloaded_error", "message": "Overloaded"})],
        "overloaded",
    ),
}
"""How a stream breaks after its first words (each API's framing), and what the error says."""


@pytest.mark.parametrize(("breaks", "words"), BROKEN.values(), ids=BROKEN.keys())
async def test_a_broken_stream_fails_the_turn_with_the_partial_kept(
    wire: Wire,
    server: WireServer,
    store: Store,
    breaks: Callable[[Wire], list[Step]],
    words: str,
) -> None:
    server.play([*wire.opening("Half ", cut=True), *breaks(wire)])
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED, outcome.error
    assert words in outcome.error, outcome.error
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.FAILED and response.text == "Half "
    assert len(server.requests) == 1  # A reply that had begun is never retried.
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_a_silent_stall_ends_at_the_idle_timeout(
    wire: Wire, server: WireServer, store: Store
) -> None:
    clock = LoopClock()
    server.play([*wire.opening("Hm", cut=True), STALL])
    provider = wire.provider(server.base_url)
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


async def test_connection_refused_is_retried_then_explained(wire: Wire, store: Store) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    provider = wire.provider(url)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await run_skipping_retry_waits(turn.run(), sink)

    assert outcome.state is ResponseState.FAILED
    assert "connection refused" in outcome.error and wire.api_url(url) in outcome.error
    assert retry_waits(sink) == [RetryWait(1.0, "no connection"), RetryWait(2.0, "no connection")]
    assert_no_secret(store, outcome.error)
    await provider.close()


async def test_a_tls_failure_is_explained(wire: Wire, store: Store) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_in_plain_http() -> None:  # To a TLS hello: not TLS at all.
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_in_plain_http, daemon=True).start()
    provider = wire.provider(f"https://127.0.0.1:{port}")
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "TLS" in outcome.error, outcome.error
    await provider.close()
    listener.close()


async def test_no_key_names_the_variable_and_the_config_key(wire: Wire, store: Store) -> None:
    provider = wire.keyless()
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert wire.key_variable in outcome.error and f"[{wire.name}]" in outcome.error


async def test_an_error_is_shown_inline_without_the_key(
    wire: Wire, server: WireServer, store: Store
) -> None:
    body = wire.error_body("authentication_error", f"Incorrect API key provided: {SECRET}")
    server.play([Error(401, body)])
    app = make_app(store, wire.provider(server.base_url))
    async with app.run_test() as pilot:
        await send(pilot, "hello")
        await wait_until(pilot, settled(app))

        (notice,) = app.screen.query(ErrorNotice)
        shown = str(notice.render())
        assert "refused the API key (401)" in shown and wire.key_variable in shown
        assert SECRET not in shown and "***" in shown  # The server echoed it: redacted.
        assert app.screen.query_one(StatusBar).state == "failed"
        (view,) = app.screen.query(AssistantMessage)
        assert "-failed" in view.classes
    assert_no_secret(store, app.last_outcome.error)


# Continuing a reply cut short, and a stopped reply kept in the history

SEAMS: dict[str, tuple[str, list[str], str]] = {
    "space": ("Roses are ", [" red", " and blue."], "Roses are red and blue."),
    "paragraph-in-pieces": ("One.\n\n", ["\n", "\nTwo."], "One.\n\nTwo."),
    "more-than-before": ("One.\n", ["\n\nTwo."], "One.\n\nTwo."),
    "less-than-before": ("One.\n\n", ["\nTwo."], "One.\n\nTwo."),
    "no-whitespace": ("Roses are", [" red."], "Roses are red."),
}
"""A partial, the continuation the server streams, and the one reply they make on screen."""


@pytest.mark.parametrize(("partial", "pieces", "whole"), SEAMS.values(), ids=SEAMS.keys())
async def test_continuing_sends_the_partial_without_trailing_whitespace_and_streams_the_rest(
    wire: Wire, server: WireServer, partial: str, pieces: list[str], whole: str
) -> None:
    server.play(wire.reply(*pieces))
    provider = wire.provider(server.base_url)
    history = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "A poem?"),
        ChatMessage("assistant", partial),
    ]

    events = await request(provider, history, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    system, messages = wire.prompt_of(sent.body)
    assert system == "Be brief." and messages[0] == wire.user("A poem?")
    if wire.continues_by == "instruction":
        *messages, instruction = messages
        assert instruction == wire.user(continue_instruction(partial.rstrip()))
    assert len(messages) == 2 and messages[-1]["role"] == "assistant"
    assert wire.text_of(messages[-1]) == partial.rstrip()
    assert partial + "".join(texts(events)) == whole  # Nothing lost or doubled at the seam.
    await provider.close()


async def test_continuing_a_reply_of_only_whitespace_asks_for_a_reply_as_usual(
    wire: Wire, server: WireServer
) -> None:
    server.play(wire.reply("\n", "Hello."))
    provider = wire.provider(server.base_url)
    history = [ChatMessage("user", "Hi?"), ChatMessage("assistant", "\n\n")]

    events = await request(provider, history, continuing=True)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    assert wire.prompt_of(sent.body)[1] == [wire.user("Hi?")]
    assert texts(events) == ["Hello."]  # Its "\n" repeated the partial's: dropped.
    await provider.close()


# Continuing by instruction: the model says the partial's last words again, then goes on

INSTRUCTED = {"continue_with": "instruction"}


def _cut_after(partial: str) -> list[ChatMessage]:
    """A conversation whose reply was cut short after `partial`."""
    return [ChatMessage("user", "A poem?"), ChatMessage("assistant", partial)]


async def _continue_by_instruction(
    wire: Wire, server: WireServer, partial: str, continuation: list[Step]
) -> list[StreamEvent]:
    """Continue a reply cut short after `partial`, by instruction, the server streaming
    `continuation`: the events the provider gave."""
    server.play(continuation)
    provider = wire.provider(server.base_url, **INSTRUCTED)
    try:
        return await request(provider, _cut_after(partial), continuing=True)
    finally:
        await provider.close()


def test_the_words_to_say_again_are_the_last_line_s_last_five_words_within_40_characters() -> None:
    assert repeat_tail("A poem.\nOne two three four five six seven") == "three four five six seven"
    assert repeat_tail("Roses are") == "Roses are"
    assert repeat_tail("x\nsupercalifragilistic expialidocious, truly") == "expialidocious, truly"
    url = "https://example.com/" + "a" * 60
    assert repeat_tail(f"See {url}") == url[-40:]  # A word longer than that: its end.
    assert repeat_tail("我喜欢吃饭") == "我喜欢吃饭"


async def test_an_instructed_continue_names_the_last_words_to_say_again(
    wire: Wire, server: WireServer
) -> None:
    partial = "A poem.\nOne two three four five six seven "
    await _continue_by_instruction(wire, server, partial, wire.reply(" eight."))

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    *_before, partial, instruction = wire.prompt_of(sent.body)[1]
    assert wire.text_of(partial) == "A poem.\nOne two three four five six seven"
    said = wire.text_of(instruction)
    assert '"three four five six seven"' in said and "Begin by writing its last words" in said
    assert instruction == wire.user(continue_instruction("three four five six seven"))


REPEATS: dict[str, tuple[str, list[str], str]] = {
    "exactly": ("Roses are", ["Roses are", " red."], "Roses are red."),
    "after-a-space": ("Roses are", [" Roses are red."], "Roses are red."),
    "after-a-newline": ("Roses are", ["\nRoses are red."], "Roses are red."),
    "the-last-word-only": ("Roses are", ["are red."], "Roses are red."),
    "after-a-partial-ending-in-a-space": ("Roses are ", ["Roses are", " red."], "Roses are red."),
    "more-than-asked": (
        "A poem.\nOne two three four five six seven",
        ["One two three four five six seven", " eight."],
        "A poem.\nOne two three four five six seven eight.",
    ),
    "in-one-character-pieces": ("Roses are", list(" Roses are red."), "Roses are red."),
}
"""A partial, a continuation that begins with its last words again, and the one reply."""


@pytest.mark.parametrize(("partial", "pieces", "whole"), REPEATS.values(), ids=REPEATS.keys())
async def test_an_instructed_continue_drops_the_last_words_the_model_says_again(
    wire: Wire, server: WireServer, partial: str, pieces: list[str], whole: str
) -> None:
    events = await _continue_by_instruction(wire, server, partial, wire.reply(*pieces))

    assert server.requests[0].refused is None, server.requests[0].refused
    assert partial + "".join(texts(events)) == whole  # Nothing doubled, nothing lost.


CUT_WORDS: dict[str, tuple[str, list[str], str]] = {
    "started-again": ("Fresh bre", ["bread", " today."], "Fresh bread today."),
    "started-again-after-a-space": ("Fresh bre", [" bread today."], "Fresh bread today."),
    "with-the-words-before-it": ("Fresh bre", ["Fresh bread today."], "Fresh bread today."),
    "in-one-character-pieces": ("Fresh bre", list("bread today."), "Fresh bread today."),
    "a-number-not-repeated": ("It was 19", ["84."], "It was 1984."),
}
"""A partial cut in the middle of a word, its continuation, and the one reply."""


@pytest.mark.parametrize(("partial", "pieces", "whole"), CUT_WORDS.values(), ids=CUT_WORDS.keys())
async def test_an_instructed_continue_joins_a_word_cut_in_the_middle_into_one(
    wire: Wire, server: WireServer, partial: str, pieces: list[str], whole: str
) -> None:
    events = await _continue_by_instruction(wire, server, partial, wire.reply(*pieces))

    assert partial + "".join(texts(events)) == whole


NO_REPEAT: dict[str, tuple[str, list[str], str]] = {
    "a-new-word": ("Roses are", ["red."], "Roses are red."),
    "a-new-word-that-begins-like-the-last": ("Roses are", list("arrows."), "Roses are arrows."),
    "after-trailing-whitespace": ("Roses are ", ["red."], "Roses are red."),
    "punctuation": ("Roses are red", [", and blue."], "Roses are red, and blue."),
    "a-script-without-spaces": ("我喜欢", ["吃饭。"], "我喜欢吃饭。"),
}
"""A partial, a continuation that does not say its last words again, and the one reply."""


@pytest.mark.parametrize(("partial", "pieces", "whole"), NO_REPEAT.values(), ids=NO_REPEAT.keys())
async def test_an_instructed_continue_that_repeats_nothing_gets_one_space_between_two_words(
    wire: Wire, server: WireServer, partial: str, pieces: list[str], whole: str
) -> None:
    events = await _continue_by_instruction(wire, server, partial, wire.reply(*pieces))

    assert partial + "".join(texts(events)) == whole


def _ended_in_a_repeat(wire: Wire, how: str) -> list[Step]:
    """A continuation that is the partial's last words again and nothing new, then `how`."""
    if how == "a-tool-call":
        call = wire.call(0, "call_1", "read_file", '{"path": "a"}')
        return [*wire.opening("Roses are"), *call, *wire.ending("tool_calls")]
    return [*wire.opening("Roses a"), *wire.ending("stop")]  # Cut short: nothing new.


@pytest.mark.parametrize("how", ["a-tool-call", "the-end"])
async def test_a_repeat_that_ends_at_a_tool_call_or_the_reply_s_end_adds_nothing(
    wire: Wire, server: WireServer, how: str
) -> None:
    continuation = _ended_in_a_repeat(wire, how)
    events = await _continue_by_instruction(wire, server, "Roses are", continuation)

    assert texts(events) == []
    calls = [event for event in events if isinstance(event, ToolCallStart)]
    assert [call.name for call in calls] == (["read_file"] if how == "a-tool-call" else [])


def _reasoning(wire: Wire, text: str) -> list[Step]:
    """Reasoning after the text so far: it passes the seam at once, so the test sees it came."""
    if wire.name == "openai":
        return ow.reasoning(text)
    return aw.thinking_block(1, text, stop=False)


async def test_a_stop_while_the_repeated_words_are_held_back_keeps_the_partial_once(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """The start of a continuation that may be the repeat asked for is held back until it can
    be told apart: a stop then drops it (it only ever said the partial's words again), so the
    store and what was shown both read the partial, once."""
    held = threading.Event()
    server.play(
        [*wire.opening("Roses ", "are", cut=True), Gate(held), *wire.rest("never sent")],
        [*wire.opening("Roses", " ar", cut=True), *_reasoning(wire, "Hm."), STALL],
    )
    provider = wire.provider(server.base_url, **INSTRUCTED)
    turn, sink = make_turn(store, provider, settings=settings(), prompt="A poem?")
    await run_and_stop_when(turn, lambda: len(sink.texts) == 2)
    stopped = stored(store, turn)[-1]
    assert stopped.text == "Roses are"

    again, shown = continue_turn(store, provider, turn, stopped)
    await run_and_stop_when(
        again, lambda: any(isinstance(e.payload, ThinkingDelta) for e in shown.events)
    )

    await disconnected(server, 2)
    assert shown.texts == []  # Nothing of the repeat was shown...
    for conversation in (again.conversation, store.load_conversation(turn.conversation.id)):
        (_prompt, reply) = conversation.items
        assert isinstance(reply, ModelResponse)
        assert reply.text == "Roses are"  # ...nor stored: the partial, once.
    await provider.close()


KEPT: dict[str, list[ToolCallPart]] = {
    "text-only": [],
    "with-a-cut-off-call": [
        ToolCallPart("call_1", "read_file", '{"path": "a"}', complete=True),  # It never ran.
        ToolCallPart("call_2", "read_file", '{"pa', complete=False),
    ],
}


@pytest.mark.parametrize("calls", KEPT.values(), ids=KEPT.keys())
async def test_a_kept_interrupted_reply_is_accepted_by_the_api_without_its_calls(
    wire: Wire, server: WireServer, calls: list[ToolCallPart]
) -> None:
    stopped = ModelResponse(
        "p", "m", [TextPart("Let me look. "), *calls], ResponseState.INTERRUPTED
    )
    items = [UserPrompt("Read a."), stopped, UserPrompt("Never mind.")]
    server.play(wire.reply("Fine."))
    provider = wire.provider(server.base_url)

    history = build_history(items, system_prompt="Be brief.", interrupted_reply="keep")
    events = await request(provider, history)

    (sent,) = server.requests
    assert sent.refused is None, sent.refused
    _system, messages = wire.prompt_of(sent.body)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert wire.text_of(messages[1]) == f"Let me look.\n\n{KEPT_REPLY_NOTE}"
    assert wire.text_of(messages[2]) == "Never mind."  # No "interrupted" note: the reply says it.
    assert "call_" not in json.dumps(sent.body) and "read_file" not in json.dumps(sent.body)
    assert texts(events) == ["Fine."]
    await provider.close()
