"""What real servers send that the official APIs do not, on the real SDKs over loopback.

OpenAI-compatible servers and Anthropic gateways differ from the APIs they
copy: a reply cut by the token limit inside a call, a tool name in pieces,
arguments as an object, null fields, pings with empty data, SSE fields that
dispatch no event, bytes that are not UTF-8, an error that is a bare string.
Each test scripts the raw event stream (`wire.sse`, `wire.Raw`) and checks
what is stored, what ran, what the next request holds, and that every error
is a sentence rather than a Python exception.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from chatui.messages import ModelResponse, ResponseState, ToolResult
from chatui.providers.base import ToolCallDelta, ToolCallStart
from chatui.providers.sse import events as sse_events
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.tool_call import ToolCallView
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.remote import PROVIDERS, Wire, assert_no_secret, settings
from tests.support.turns import make_turn, stored
from tests.support.wire import Error, Raw, Send, Step, WireServer, sse

PYTHON_ERRORS = ("Error:", "Exception", "Traceback", "NoneType", "KeyError")


class Notes:
    """A `note` tool that records every text it was called with."""

    def __init__(self) -> None:
        self.ran: list[str] = []

        def note(text: str) -> str:
            """Keep a note."""
            self.ran.append(text)
            return "noted"

        self.registry = ToolRegistry([Tool(note)])


def responses(store: Store, turn) -> list[ModelResponse]:  # type: ignore[no-untyped-def]
    return [i for i in stored(store, turn) if isinstance(i, ModelResponse)]


def assert_a_sentence(error: str | None) -> None:
    assert error and not any(word in error for word in PYTHON_ERRORS), error


# A reply cut by the token limit inside a call's arguments


async def test_a_call_cut_by_the_token_limit_is_shown_cut_off_never_runs_and_is_not_sent_back(
    wire: Wire, server: WireServer, store: Store
) -> None:
    notes = Notes()
    cut = wire.call(0, "call_1", "note", '{"text": "hal', "f a")
    server.play([*wire.opening("Let me note it."), *cut, *wire.ending("length")])
    provider = wire.provider(server.base_url)
    app = make_app(store, provider, tools=notes.registry)
    async with app.run_test(size=(100, 40)) as pilot:
        await send(pilot, "take a note")
        await wait_until(pilot, settled(app))

        assert [view.status for view in app.chat.query(ToolCallView)] == ["cut off"]
        items = store.load_conversation(app.chat.conversation.id).items
        (response,) = [i for i in items if isinstance(i, ModelResponse)]
        (part,) = response.tool_calls
        assert response.state is ResponseState.COMPLETE and response.finish_reason == "length"
        assert (part.arguments, part.complete) == ('{"text": "half a', False)
        assert not [i for i in items if isinstance(i, ToolResult)]
        assert notes.ran == []
        assert len(server.requests) == 1  # Nothing ran, so nothing was sent back.

        server.play(wire.reply("Fine."))
        await send(pilot, "again")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.COMPLETE
        following = server.requests[1]
        assert following.refused is None
        sent = json.dumps(following.body)
        assert "Let me note it." in sent and "call_1" not in sent and "half a" not in sent
    assert notes.ran == []
    await provider.close()


async def test_only_the_call_the_token_limit_cut_is_cut_off(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """A call that ended before the next one began is whole: it runs, and is answered."""
    notes = Notes()
    first = wire.call(0, "call_1", "note", '{"text": ', '"one"}')
    second = wire.call(1, "call_2", "note", '{"text": "tw')
    server.play([*wire.opening("Two notes."), *first, *second, *wire.ending("length")])
    server.play(wire.reply("Noted one."))
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert notes.ran == ["one"]
    cut_reply = responses(store, turn)[0]
    assert [(c.id, c.complete) for c in cut_reply.tool_calls] == [
        ("call_1", True),
        ("call_2", False),
    ]
    assert [r.call_id for r in stored(store, turn) if isinstance(r, ToolResult)] == ["call_1"]
    assert server.requests[1].refused is None
    sent = json.dumps(server.requests[1].body)
    assert "call_1" in sent and "call_2" not in sent
    await provider.close()


async def test_calls_of_a_compatible_server_that_ends_them_with_stop_still_run(
    store: Store,
) -> None:
    """Some OpenAI-compatible servers end a reply of calls with "stop", not "tool_calls"."""
    notes = Notes()
    with WireServer(validate=ow.validate) as server:
        server.play([*ow.tool_call(0, "call_1", "note", '{"text": "kept"}'), *ow.ending("stop")])
        server.play(ow.reply("Done."))
        provider = PROVIDERS["openai"](server.base_url)
        turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

        assert (await turn.run()).state is ResponseState.COMPLETE
        assert notes.ran == ["kept"]
        await provider.close()


# A tool name streamed in pieces


async def test_a_tool_name_streamed_in_pieces_calls_the_whole_name(store: Store) -> None:
    notes = Notes()
    with WireServer(validate=ow.validate) as server:
        server.play(
            [
                ow.call_delta(0, id="call_1", name="no"),
                ow.call_delta(0, name="te"),
                ow.call_delta(0, arguments='{"text": '),
                ow.call_delta(0, arguments='"whole"}'),
                *ow.ending("tool_calls"),
            ],
            ow.reply("Done."),
        )
        provider = PROVIDERS["openai"](server.base_url)
        turn, sink = make_turn(store, provider, tools=notes.registry, settings=settings())

        assert (await turn.run()).state is ResponseState.COMPLETE
        assert notes.ran == ["whole"]
        starts = [e.payload for e in sink.events if isinstance(e.payload, ToolCallStart)]
        assert [(s.id, s.name) for s in starts] == [("call_1", "note")]
        deltas = [e.payload for e in sink.events if isinstance(e.payload, ToolCallDelta)]
        assert [d.arguments for d in deltas] == ['{"text": ', '"whole"}']  # Still streamed.
        (part,) = responses(store, turn)[0].tool_calls
        assert (part.name, part.complete) == ("note", True)
        await provider.close()


async def test_a_name_and_id_repeated_in_every_delta_are_taken_once(store: Store) -> None:
    notes = Notes()
    with WireServer(validate=ow.validate) as server:
        server.play(
            [
                ow.call_delta(0, id="call_1", name="note", arguments=""),
                ow.call_delta(0, id="call_1", name="note", arguments='{"text": '),
                ow.call_delta(0, id="call_1", name="note", arguments='"once"}'),
                *ow.ending("tool_calls"),
            ],
            ow.reply("Done."),
        )
        provider = PROVIDERS["openai"](server.base_url)
        turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

        assert (await turn.run()).state is ResponseState.COMPLETE
        assert notes.ran == ["once"]
        (part,) = responses(store, turn)[0].tool_calls
        assert (part.id, part.name, part.arguments) == ("call_1", "note", '{"text": "once"}')
        await provider.close()


# Malformed chunks and events


def _odd_openai_chunks() -> list[Step]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return [
        Send({**base, "choices": None}),
        sse("event: ping", "data: {}"),
        Send({}),
        Send({**base, "choices": [None, "x", {"index": 0, "delta": None}]}),
        Send({**base, "choices": [{"index": 0, "delta": {"content": None, "tool_calls": None}}]}),
        Send({**base, "choices": [{"index": 0, "delta": {"content": 7}}]}),
        Send({**base, "choices": "none", "usage": "none"}),
        Send([1, 2]),
    ]


def _odd_anthropic_events() -> list[Step]:
    return [
        sse("event: ping", "data: {}"),
        aw.event({"type": "content_block_delta"}),
        aw.event({"type": "content_block_delta", "index": 0, "delta": None}),
        aw.event({"type": "content_block_delta", "index": 0, "delta": {"type": "new_delta"}}),
        aw.event({"type": "content_block_start", "index": 3, "content_block": None}),
        aw.event({"type": "content_block_stop", "index": 9}),
        aw.event({"type": "a_new_event", "data": 1}),
        Send({"type": "message_delta"}, event="message_delta"),
    ]


async def test_chunks_and_events_that_carry_nothing_usable_are_skipped(
    wire: Wire, server: WireServer, store: Store
) -> None:
    odd = _odd_openai_chunks() if wire.name == "openai" else _odd_anthropic_events()
    server.play([*wire.opening("Hello ", cut=True), *odd, *wire.rest("world.")])
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert responses(store, turn)[0].text == "Hello world."
    await provider.close()


async def test_arguments_for_a_block_that_never_started_are_skipped(store: Store) -> None:
    notes = Notes()
    with WireServer(validate=aw.validate) as server:
        block = aw.tool_block(1, "toolu_1", "note", '{"text": "real"}')
        server.play(
            [*aw.start(), aw.json_delta(5, '{"text": "stray"}'), *block, *aw.ending("tool_use")],
            aw.reply("Done."),
        )
        provider = PROVIDERS["anthropic"](server.base_url)
        turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

        outcome = await turn.run()

        assert outcome.state is ResponseState.COMPLETE, outcome.error
        assert notes.ran == ["real"]
        (part,) = responses(store, turn)[0].tool_calls
        assert part.arguments == '{"text": "real"}'
        await provider.close()


async def test_arguments_sent_as_an_object_are_taken_as_its_json(
    wire: Wire, server: WireServer, store: Store
) -> None:
    notes = Notes()
    arguments = {"text": "as an object"}
    if wire.name == "openai":
        steps = [ow.call_delta(0, id="call_1", name="note", arguments=arguments)]
        steps += ow.ending("tool_calls")
    else:
        steps = [*aw.start(), *aw.tool_block(1, "call_1", "note", stop=False)]
        steps += [aw.json_delta(1, arguments), aw.event({"type": "content_block_stop", "index": 1})]
        steps += aw.ending("tool_use")
    server.play(steps, wire.reply("Done."))
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert notes.ran == ["as an object"]
    (part,) = responses(store, turn)[0].tool_calls
    assert json.loads(part.arguments) == arguments
    await provider.close()


async def test_a_tool_use_whose_input_comes_whole_in_its_start_is_called_with_it(
    store: Store,
) -> None:
    """Some gateways put the whole input in `content_block_start` and send no deltas."""
    notes = Notes()
    with WireServer(validate=aw.validate) as server:
        block = {"type": "tool_use", "id": "toolu_1", "name": "note", "input": {"text": "given"}}
        steps = [
            *aw.start(),
            aw.event({"type": "content_block_start", "index": 0, "content_block": block}),
            aw.event({"type": "content_block_stop", "index": 0}),
            *aw.ending("tool_use"),
        ]
        server.play(steps, aw.reply("Done."))
        provider = PROVIDERS["anthropic"](server.base_url)
        turn, _ = make_turn(store, provider, tools=notes.registry, settings=settings())

        assert (await turn.run()).state is ResponseState.COMPLETE
        assert notes.ran == ["given"]
        await provider.close()


async def test_bytes_that_are_not_utf8_are_replaced_and_the_user_told_once(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """The spec decodes an event stream with replacement characters: the reply goes on."""
    if wire.name == "openai":
        bad = sse(b'data: {"choices": [{"index": 0, "delta": {"content": "caf\xe9 "}}]}')
    else:
        delta = b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", '
        bad = sse("event: content_block_delta", b"data: " + delta + b'"text": "caf\xe9 "}}')
    server.play([*wire.opening("Half ", cut=True), bad, bad, *wire.rest("more.")])
    provider = wire.provider(server.base_url)
    notices: list[str] = []
    provider.on_notice = notices.append
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert responses(store, turn)[0].text == "Half caf\ufffd caf\ufffd more."
    (notice,) = notices
    assert "not valid UTF-8" in notice
    assert_a_sentence(notice)
    await provider.close()


# Errors whose `error` is a string, as gateways send


async def test_an_error_that_is_a_bare_string_is_explained(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play([Error(401, {"error": "Unauthorized: invalid x-api-key"})])
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert f"{wire.label} refused the API key (401)" in outcome.error
    assert "Unauthorized: invalid x-api-key" in outcome.error
    assert_a_sentence(outcome.error)
    await provider.close()


async def test_an_error_event_that_is_a_bare_string_is_explained(
    wire: Wire, server: WireServer, store: Store
) -> None:
    server.play([*wire.opening("Half ", cut=True), wire.error_event("upstream timed out")])
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert "upstream timed out" in outcome.error
    assert_a_sentence(outcome.error)
    assert responses(store, turn)[0].text == "Half "
    assert_no_secret(store, outcome.error)
    await provider.close()


# SSE fields that dispatch no event


async def test_fields_that_dispatch_no_event_are_skipped(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """`retry:` and `id:` alone, and comments, dispatch nothing (the SSE spec)."""
    quiet = [sse("retry: 3000"), sse("id: 7"), sse(": keep-alive"), Raw(b"\n")]
    if wire.name == "openai":
        steps = [*quiet, *ow.text("All "), *quiet, *ow.reply("here.")]
    else:
        steps = [*quiet, *aw.start(), *aw.text_block(0, "All ", "here.", stop=False), *quiet]
        steps += [aw.event({"type": "content_block_stop", "index": 0}), *aw.ending()]
    server.play(steps)
    provider = wire.provider(server.base_url)
    turn, _ = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert responses(store, turn)[0].text == "All here."
    await provider.close()


# Reading the body ourselves keeps what the SDKs did


async def test_a_finished_reply_leaves_its_connection_for_the_next_request(
    wire: Wire, server: WireServer, store: Store
) -> None:
    """The body is read to its end after the last event, so HTTP/1.1 reuses the connection."""
    server.play(wire.reply("One."), wire.reply("Two."))
    provider = wire.provider(server.base_url)
    first, _ = make_turn(store, provider, settings=settings(), prompt="one")
    assert (await first.run()).state is ResponseState.COMPLETE
    second, _ = make_turn(
        store, provider, conversation=first.conversation, settings=settings(), prompt="two"
    )
    assert (await second.run()).state is ResponseState.COMPLETE

    assert [r.peer for r in server.requests] == [server.requests[0].peer] * 2
    await provider.close()


async def test_events_split_at_every_kind_of_line_end_even_across_chunks() -> None:
    """CRLF, LF and CR all end a line (the spec), wherever the network cut the bytes."""
    stream = (
        b'\xef\xbb\xbfdata: {"a": 1}\r\n\r\nevent: x\rdata: 2\r\rdata: 3\ndata:4\n\n:c\n\ndata: cut'
    )
    every_cut = [
        [stream[:n], stream[n:m], stream[m:]]
        for n in range(len(stream) + 1)
        for m in range(n, len(stream) + 1, 7)
    ]

    async def body(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    for chunks in every_cut:
        events = [(e.name, e.data) for e in [e async for e in sse_events(body(chunks))]]
        assert events == [("message", '{"a": 1}'), ("x", "2"), ("message", "3\n4")], chunks
