"""A conversation longer than the model's context window never dead-ends.

The oldest whole exchanges stop being sent, a quarter of the window at a time,
and the history sent between two trims keeps its prefix. Local: real llama.cpp
on the tiny GGUF with a small `n_ctx`, counting exact tokens. Remote: the real
SDKs against wire servers that refuse a request longer than their window, in
their own words, and a provider that learns the window from that refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatui.context import DoesNotFit, fit_history
from chatui.history import TRIMMED_NOTE, ChatMessage, build_history
from chatui.messages import ModelResponse, ResponseState, TextPart, UserPrompt
from chatui.providers.base import (
    ContextOverflow,
    ProviderError,
)
from chatui.providers.local.provider import LocalProvider
from chatui.providers.overflow import as_overflow
from chatui.store import Store
from chatui.turn import ContextFill, ContextTrimmed, TurnSettings
from tests.support.local import local_config
from tests.support.remote import SECRET, WIRES, Wire
from tests.support.scripted import WindowedProvider, calls, words
from tests.support.turns import BRIEF, RecordingTools, make_turn, run_turn
from tests.support.wire import WireServer

WINDOW, REPLY = 512, 32  # The local model's n_ctx and max_tokens here.


def payloads(sink: Any, kind: type) -> list[Any]:
    return [e.payload for e in sink.events if isinstance(e.payload, kind)]


# The plan, on its own


def exchanges(n: int, size: int = 40) -> list[Any]:
    items: list[Any] = []
    for k in range(n):
        items.append(UserPrompt(f"q{k} " + "x" * size))
        items.append(
            ModelResponse("p", "m", [TextPart(f"a{k} " + "y" * size)], ResponseState.COMPLETE)
        )
    return items


def by_chars(messages: Sequence[ChatMessage]) -> int:
    return sum(len(m.content) for m in messages)


async def plan(items: list[Any], view_start: str | None, window: int, reply: int) -> Any:
    async def count(messages: list[ChatMessage]) -> int:
        return by_chars(messages)

    return await fit_history(
        items,
        view_start,
        build=lambda start: build_history(items, view_start=start),
        count=count,
        window=window,
        reply_room=reply,
    )


async def test_a_request_that_fits_is_sent_whole_and_the_view_stays() -> None:
    items = exchanges(3)
    fit = await plan(items, None, window=1000, reply=100)
    assert fit.view_start is None and fit.messages == build_history(items)


async def test_a_trim_starts_at_a_prompt_and_frees_a_quarter_of_the_window() -> None:
    items = [*exchanges(12), UserPrompt("the new one")]
    whole = by_chars(build_history(items))
    window, reply = 1000, 100
    assert whole > window - reply

    fit = await plan(items, None, window, reply)

    kept = [i for i in items if i.id == fit.view_start]
    assert kept and isinstance(kept[0], UserPrompt)
    assert fit.tokens <= window - reply - window // 4  # A quarter free, beyond the reply's room.
    assert fit.messages[0].content.startswith(TRIMMED_NOTE)
    assert fit.messages[-1].content == "the new one"
    # The largest such view: starting one exchange earlier would not free the quarter.
    earlier = items[items.index(kept[0]) - 2]
    assert by_chars(build_history(items, view_start=earlier.id)) > window - reply - window // 4


async def test_the_view_stays_put_until_a_request_no_longer_fits() -> None:
    items = [*exchanges(12), UserPrompt("next")]
    first = await plan(items, None, 1000, 100)
    items += [ModelResponse("p", "m", [TextPart("short")], ResponseState.COMPLETE)]
    items.append(UserPrompt("and again"))
    second = await plan(items, first.view_start, 1000, 100)
    assert second.view_start == first.view_start
    assert second.messages[: len(first.messages)] == first.messages  # The same prefix.


async def test_a_trim_keeps_the_largest_view_even_where_old_text_costs_more_tokens() -> None:
    """The estimate of what a start leaves out is an average; the view taken is still the
    largest that frees a quarter, checked by real counts, not a later one."""
    items = [*exchanges(8, size=120), *exchanges(8, size=20), UserPrompt("the new one")]
    for item in items[:16]:  # The oldest exchanges (code, say): three tokens a character.
        if isinstance(item, UserPrompt):
            item.text = item.text.replace("x", "Z")
        else:
            item.parts = [TextPart(item.text.replace("y", "Z"))]

    def counted(messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content) + 2 * m.content.count("Z") for m in messages)

    async def count(messages: list[ChatMessage]) -> int:
        return counted(messages)

    window, reply = 1200, 100
    fit = await fit_history(
        items,
        None,
        build=lambda start: build_history(items, view_start=start),
        count=count,
        window=window,
        reply_room=reply,
    )
    target = window - reply - window // 4
    start = next(n for n, item in enumerate(items) if item.id == fit.view_start)
    assert fit.tokens <= target
    earlier = items[start - 2]
    assert counted(build_history(items, view_start=earlier.id)) > target


async def test_a_larger_window_brings_the_left_out_exchanges_back() -> None:
    """A window that grew (local.n_ctx raised, a larger model): what fits is sent again,
    from the earliest prompt that still leaves a quarter free."""
    items = [*exchanges(30), UserPrompt("next")]
    trimmed = await plan(items, None, 1000, 100)
    assert trimmed.view_start is not None

    assert (await plan(items, trimmed.view_start, 1100, 100)).view_start == trimmed.view_start

    larger = await plan(items, trimmed.view_start, 2000, 100)
    assert larger.view_start is not None
    assert items.index(next(i for i in items if i.id == larger.view_start)) < items.index(
        next(i for i in items if i.id == trimmed.view_start)
    )
    assert larger.tokens <= 2000 - 100 - 2000 // 4

    everything = await plan(items, trimmed.view_start, 10_000, 100)
    assert everything.view_start is None and everything.messages == build_history(items)


async def test_a_turn_with_a_larger_window_sends_the_whole_conversation_again(
    store: Store,
) -> None:
    provider = WindowedProvider(window=400, reply=50)
    conversation = store.create_conversation()
    while conversation.view_start is None:
        provider.play(words("An answer " + "and so on " * 10))
        await run_turn(provider, store, conversation, "A question " + "of some length " * 5)

    larger = WindowedProvider(window=8000, reply=50)
    larger.play(words("Fine."))
    outcome, sink = await run_turn(larger, store, conversation, "One more?")

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert [t.view_start for t in payloads(sink, ContextTrimmed)] == [None]
    assert conversation.view_start is None
    assert store.load_conversation(conversation.id).view_start is None
    sent = [m for m in larger.records[-1].request.messages if m.role != "system"]
    assert not sent[0].content.startswith(TRIMMED_NOTE)
    assert len(sent) == len(conversation.items) - 1  # Every prompt and answer but the new one's.


async def test_only_the_newest_exchange_that_still_does_not_fit_is_refused() -> None:
    items = [*exchanges(2), UserPrompt("z" * 950)]
    with pytest.raises(DoesNotFit) as refused:
        await plan(items, None, 1000, 100)
    assert refused.value.limit == 900 and refused.value.tokens > 900


async def test_a_tool_call_is_never_separated_from_its_result(store: Store) -> None:
    """Every request's history starts at a prompt and holds each call with its result."""
    provider = WindowedProvider(window=700, reply=50)
    tools = RecordingTools()
    conversation = store.create_conversation()
    for n in range(12):
        provider.play(calls((f"c{n}", "echo", json.dumps({"n": n, "pad": "p" * 60}))))
        provider.play(words(f"Answer {n} " + "w" * 80))
        turn, _ = make_turn(
            store, provider, conversation=conversation, tools=tools, prompt=f"Question {n}"
        )
        outcome = await turn.run()
        assert outcome.state is ResponseState.COMPLETE, outcome.error

    assert conversation.view_start is not None  # It trimmed.
    for record in provider.records:
        messages = [m for m in record.request.messages if m.role != "system"]
        assert messages[0].role == "user"
        offered = {c.id for m in messages for c in m.tool_calls}
        answered = [m.tool_call_id for m in messages if m.role == "tool"]
        assert sorted(offered) == sorted(answered)  # No call without its result, nor after.
        assert provider.counted(record.request.messages) <= 700 - 50


# Local: real llama.cpp, exact counts


@pytest.fixture
async def small(tiny_model: Path, tmp_path: Path) -> Iterator[LocalProvider]:
    local = LocalProvider(
        local_config(tiny_model, n_ctx=WINDOW, max_tokens=REPLY), state_dir=tmp_path / "kv"
    )
    await local.prepare()
    yield local
    await local.close()


async def test_thirty_local_exchanges_in_a_small_context_never_fail(
    small: LocalProvider, store: Store
) -> None:
    conversation = store.create_conversation()
    trims, previous = 0, None
    for n in range(30):
        outcome, sink = await run_turn(
            small, store, conversation, f"Question {n}: tell me more about cats and dogs."
        )
        job = small.last_job
        assert outcome.state is ResponseState.COMPLETE, outcome.error
        # The reply's room was kept: never cut short by a full context.
        assert len(job.reply_tokens) == REPLY and job.prompt_tokens + REPLY <= WINDOW
        (fill,) = payloads(sink, ContextFill)
        assert (fill.tokens, fill.window) == (job.prompt_tokens, WINDOW)
        if payloads(sink, ContextTrimmed):
            trims += 1
            assert job.prompt_tokens <= WINDOW - REPLY - WINDOW // 4  # A step, not a nibble.
        elif previous is not None:
            # Between trims, the history sent only grows: the cache holds its prefix.
            assert job.prompt_ids[: len(previous)] == previous
            assert job.reused >= len(previous)
        previous = job.prompt_ids + job.reply_tokens[:-1]
    assert 5 <= trims <= 15
    assert len(store.load_conversation(conversation.id).items) == 60  # The store keeps all.
    assert store.load_conversation(conversation.id).view_start == conversation.view_start


async def test_the_view_start_outlives_a_restart_and_the_next_request_uses_it(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    config = local_config(tiny_model, n_ctx=WINDOW, max_tokens=REPLY)
    first = LocalProvider(config, state_dir=tmp_path / "kv")
    await first.prepare()
    conversation = store.create_conversation()
    while conversation.view_start is None:
        await run_turn(first, store, conversation, "Tell me about the sea and its fish.")
    await first.close()

    second = LocalProvider(config, state_dir=tmp_path / "kv")
    await second.prepare()
    reopened = store.load_conversation(conversation.id)
    outcome, sink = await run_turn(second, store, reopened, "And its birds?")
    await second.close()

    assert outcome.state is ResponseState.COMPLETE
    assert reopened.view_start == conversation.view_start and not payloads(sink, ContextTrimmed)
    sent = second.last_request.messages
    assert sent[1].content.startswith(TRIMMED_NOTE)  # After the system prompt.


async def test_a_prompt_that_can_never_fit_is_refused_and_not_kept(
    small: LocalProvider, store: Store
) -> None:
    conversation = store.create_conversation()
    await run_turn(small, store, conversation, "A short question.")
    before = small.last_job

    outcome, _ = await run_turn(small, store, conversation, "cats and dogs " * 400)

    assert outcome.state is ResponseState.FAILED and outcome.refused
    assert "too long for the model" in outcome.error and f"holds {WINDOW}" in outcome.error
    assert small.last_job is before  # Nothing was sent.
    stored = store.load_conversation(conversation.id).items
    assert [type(i) for i in stored] == [UserPrompt, ModelResponse]
    assert conversation.items == stored


# Remote: the window named in a refusal, or configured


def too_long(wire: Wire, window: int, tokens: int) -> dict[str, Any]:
    """The server's refusal of a `tokens`-token prompt, in its API's words."""
    if wire.name == "anthropic":
        message = f"prompt is too long: {tokens} tokens > {window} maximum"
        return wire.error_body("invalid_request_error", message)
    message = (
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages."
    )
    body = wire.error_body("invalid_request_error", message)
    body["error"]["code"] = "context_length_exceeded"
    return body


@pytest.fixture
def server(wire: Wire) -> Iterator[WireServer]:
    """A server whose model holds 400 tokens of 4 characters (its own count)."""

    def validate(body: dict[str, Any]) -> dict[str, Any] | None:
        refused = wire.validate(body)
        tokens = len(json.dumps(body.get("messages", []))) // 4 + body.get("max_tokens", 0)
        return refused or (too_long(wire, 400, tokens) if tokens > 400 else None)

    with WireServer(validate=validate) as wire_server:
        yield wire_server


def history_of(store: Store, exchanges_count: int) -> Any:
    conversation = store.create_conversation()
    for k in range(exchanges_count):
        for item in (
            UserPrompt(f"Question {k}: " + "q" * 120),
            ModelResponse(
                "p", "m", [TextPart(f"Answer {k}: " + "a" * 120)], ResponseState.COMPLETE
            ),
        ):
            conversation.items.append(item)
            store.save_item(conversation.id, item)
    return conversation


async def test_a_too_long_refusal_teaches_the_window_and_the_request_is_sent_once_more(
    wire: Wire, server: WireServer, store: Store
) -> None:
    provider = wire.provider(server.base_url, max_tokens=50)
    conversation = history_of(store, 8)
    server.play(wire.reply("Fine."))
    turn, sink = make_turn(store, provider, conversation=conversation, prompt="One more?")

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    first, second = server.requests
    assert first.refused is not None and second.refused is None
    assert provider.context_window == 400
    _system, messages = wire.prompt_of(second.body)
    assert wire.text_of(messages[0]).startswith(TRIMMED_NOTE)
    assert wire.text_of(messages[-1]) == "One more?"
    assert len(messages) < len(wire.prompt_of(first.body)[1])
    (trimmed,) = payloads(sink, ContextTrimmed)
    assert conversation.view_start == trimmed.view_start
    assert store.load_conversation(conversation.id).view_start == trimmed.view_start
    assert [r.text for r in outcome.responses] == ["Fine."]  # The refusal shows nowhere.
    assert outcome.responses[0].error is None


async def test_a_long_remote_conversation_never_fails(
    wire: Wire, server: WireServer, store: Store
) -> None:
    provider = wire.provider(server.base_url, max_tokens=50)
    conversation = store.create_conversation()
    for n in range(30):
        server.play(wire.reply(f"Answer {n}: " + "a" * 100))
        outcome, _ = await run_turn(
            provider, store, conversation, f"Question {n}: " + "q" * 100, settings=TurnSettings()
        )
        assert outcome.state is ResponseState.COMPLETE, (n, outcome.error)
    refused = [r for r in server.requests if r.refused is not None]
    assert len(refused) == 1  # Learned once, then every request fitted.
    assert len(server.requests) == 31


async def test_a_configured_window_trims_before_anything_is_refused(
    wire: Wire, server: WireServer, store: Store
) -> None:
    provider = wire.provider(server.base_url, max_tokens=50, context_window=400)
    conversation = history_of(store, 8)
    server.play(wire.reply("Fine."))
    outcome, sink = await run_turn(provider, store, conversation, "One more?")
    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert [r.refused for r in server.requests] == [None]
    assert payloads(sink, ContextTrimmed)


async def test_a_second_refusal_fails_the_turn_with_the_servers_words(
    wire: Wire, store: Store
) -> None:
    def refuse_all(body: dict[str, Any]) -> dict[str, Any]:
        return too_long(wire, 400, 5000)

    with WireServer(validate=refuse_all) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        conversation = history_of(store, 4)
        outcome, _ = await run_turn(provider, store, conversation, "One more?")
    assert outcome.state is ResponseState.FAILED
    assert len(server.requests) == 2  # Sent once more after learning, never a third time.
    assert outcome.error is not None and "5000" in outcome.error


async def test_a_learned_window_too_small_for_the_prompt_refuses_it_and_keeps_nothing(
    wire: Wire, store: Store
) -> None:
    def refuse_all(body: dict[str, Any]) -> dict[str, Any]:
        return too_long(wire, 60, 5000)

    with WireServer(validate=refuse_all) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        conversation = history_of(store, 2)
        outcome, _ = await run_turn(provider, store, conversation, "One more? " * 20)
    assert outcome.state is ResponseState.FAILED and outcome.refused
    assert outcome.error is not None and "This prompt is too long" in outcome.error
    assert len(server.requests) == 1 and outcome.responses == []
    assert len(conversation.items) == 4 == len(store.load_conversation(conversation.id).items)


# What counts as a "too long" refusal


class StatusError(Exception):
    def __init__(self, body: Any, message: str = "") -> None:
        self.body, self.message = body, message


@pytest.mark.parametrize(
    ("body", "window", "prompt"),
    [
        (
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens. However,"
                    " your messages resulted in 9000 tokens.",
                    "code": "context_length_exceeded",
                }
            },
            8192,
            9000,
        ),
        (
            {
                "error": {
                    "message": "'max_tokens' is too large: 2048. This model's maximum "
                    "context length is 4096 tokens and your request has 3000 input tokens"
                }
            },
            4096,
            3000,
        ),
        (
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5000,
                    "n_ctx": 4096,
                }
            },
            4096,
            5000,
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 208310 tokens > 200000 maximum",
                },
            },
            200000,
            208310,
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "input "
                    "length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
                },
            },
            200000,
            198000,
        ),
        (
            "Trying to keep the first 5000 tokens when context the overflows. However, the model "
            "is loaded with context length of only 4096 tokens",
            4096,
            None,
        ),
        (
            {"error": {"message": "Your input exceeds the context window of this model."}},
            None,
            None,
        ),
    ],
    ids=["openai", "vllm", "llama.cpp", "anthropic", "anthropic-limit", "lm-studio", "exceeds"],
)
def test_each_servers_too_long_refusal_is_read_with_its_window(
    body: Any, window: int | None, prompt: int | None
) -> None:
    read = as_overflow(StatusError(body), ProviderError("The server refused the request."))
    assert isinstance(read, ContextOverflow)
    assert (read.window, read.prompt_tokens) == (window, prompt)
    assert str(read) == "The server refused the request."  # The words shown stay chatui's.


def test_other_refusals_stay_what_they_were() -> None:
    plain = ProviderError("The model was not found.")
    body = {"error": {"message": "model 'x' not found", "type": "not_found_error"}}
    assert as_overflow(StatusError(body), plain) is plain


# The window a compatible server reports


@pytest.mark.parametrize(
    ("answers", "window"),
    [
        ([{"data": [{"id": "wire-model", "max_model_len": 400}]}], 400),
        ([{"data": [{"id": "wire-model"}]}, {"default_generation_settings": {"n_ctx": 512}}], 512),
        ([{"data": []}, {"n_ctx": 300}], 300),
        ([{"data": [{"id": "other", "max_model_len": 9}]}], None),
        ([{"data": [{"id": "wire-model", "max_model_len": True}]}, {"n_ctx": -5}], None),
    ],
    ids=["vllm", "llama.cpp", "llama.cpp-old", "none", "nonsense"],
)
async def test_a_compatible_servers_reported_window_is_used(
    answers: list[Any], window: int | None
) -> None:
    with WireServer() as server:
        server.documents = dict(zip(["/v1/models", "/props"], answers, strict=False))
        provider = WIRES[0].provider(server.base_url)
        await provider.prepare()
        await provider.prepare()  # Asked once.
    assert provider.context_window == window
    asked = ["/v1/models"] if window and "max_model_len" in json.dumps(answers) else None
    assert [r.path for r in server.gets] == (asked or ["/v1/models", "/props"])
    assert all(r.headers.get("authorization") == "Bearer " + SECRET for r in server.gets)


async def test_a_configured_window_asks_the_server_nothing() -> None:
    with WireServer() as server:
        provider = WIRES[0].provider(server.base_url, context_window=1000)
        await provider.prepare()
    assert provider.context_window == 1000 and server.gets == []


# What a refusal leaves, and what it says


async def test_the_largest_prompt_a_turn_sends_still_gets_its_whole_reply(
    small: LocalProvider, store: Store
) -> None:
    """The engine keeps one position free: a prompt the plan lets through at its very limit
    must still leave all of max_tokens for the reply."""
    largest = WINDOW - small.reply_room
    for size in range(100, 4 * WINDOW):
        prompt = "a b " * (size // 4) + "c" * (size % 4)
        history = build_history([UserPrompt(prompt)], system_prompt=BRIEF.system_prompt)
        if await small.count_tokens(history, []) == largest:
            break
    else:
        pytest.fail("no prompt of the largest size")

    outcome, _ = await run_turn(small, store, store.create_conversation(), prompt)

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert small.last_job.prompt_tokens == largest
    assert len(small.last_job.reply_tokens) == REPLY  # Not one token short.


async def test_a_refused_prompt_takes_its_trim_back_with_it(wire: Wire, store: Store) -> None:
    """The view moved for a prompt that is then refused: not kept, it leaves the view as it was."""

    def refuse_all(body: dict[str, Any]) -> dict[str, Any]:
        return too_long(wire, 60, 70)

    with WireServer(validate=refuse_all) as server:
        provider = wire.provider(server.base_url, max_tokens=50, context_window=600)
        conversation = store.create_conversation()
        for item in (
            UserPrompt("Tell me a long story."),
            ModelResponse("p", "m", [TextPart("Once " + "upon " * 400)], ResponseState.COMPLETE),
        ):
            conversation.items.append(item)
            store.save_item(conversation.id, item)
        turn, sink = make_turn(store, provider, conversation=conversation, prompt="And then?")
        outcome = await turn.run()

    assert payloads(sink, ContextTrimmed)  # The view had moved, to the refused prompt itself.
    assert outcome.refused and len(server.requests) == 1
    assert conversation.view_start is None
    assert store.load_conversation(conversation.id).view_start is None


async def test_a_remote_refusal_names_the_setting_that_would_help(wire: Wire, store: Store) -> None:
    """A remote model's window is the server's: the way out named is its own max_tokens.

    (A window at or below max_tokens leaves half of it to the prompt: see
    `test_a_small_served_window_keeps_half_for_the_prompt_and_asks_for_the_rest`.)
    """
    window, prompt, cause = 60, "One more? " * 20, "This prompt is too long"

    def refuse_all(body: dict[str, Any]) -> dict[str, Any]:
        return too_long(wire, window, 500)

    with WireServer(validate=refuse_all) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        outcome, _ = await run_turn(provider, store, history_of(store, 2), prompt)
    assert outcome.refused and outcome.error is not None
    assert cause in outcome.error
    assert f"{wire.name}.max_tokens" in outcome.error and "local." not in outcome.error


async def test_a_local_model_too_small_for_its_max_tokens_says_so(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    local = LocalProvider(local_config(tiny_model, n_ctx=64, max_tokens=63))
    try:
        outcome, _ = await run_turn(local, store, store.create_conversation(), "Hi.")
    finally:
        await local.close()
    assert outcome.refused and outcome.error is not None
    assert "This prompt is too long" not in outcome.error
    assert "local.max_tokens" in outcome.error and "leaves no room" in outcome.error


# Hostile or odd numbers in a refusal


def refusing_over(wire: Wire, window: int, named: int | None, counted: int | None) -> WireServer:
    """A server holding `window` tokens (4 characters each, with max_tokens) that refuses a
    longer request naming the window `named` and the prompt's tokens `counted` (its own count
    if None)."""

    def validate(body: dict[str, Any]) -> dict[str, Any] | None:
        prompt = len(json.dumps(body.get("messages", []))) // 4
        if prompt + body.get("max_tokens", 0) <= window:
            return wire.validate(body)
        return too_long(wire, named or window, counted or prompt)

    return WireServer(validate=validate)


async def test_a_named_window_the_refused_request_already_fit_is_not_believed(
    wire: Wire, store: Store
) -> None:
    """Its own count says the request fit the window it names: the window is under what was
    sent, not the one named (believed, nothing would ever be trimmed again)."""
    with refusing_over(wire, 400, named=10**9, counted=None) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        server.play(wire.reply("Fine."))
        outcome, _ = await run_turn(provider, store, history_of(store, 5), "One more?")
    assert [r.refused is not None for r in server.requests] == [True, False]
    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert provider.context_window is not None and provider.context_window < 10**6


async def test_an_absurd_prompt_count_in_a_refusal_is_ignored(wire: Wire, store: Store) -> None:
    """A count no tokenizer gives (a billion tokens for a few thousand characters) must not
    make every later estimate absurd: the prompt that fits is sent, not refused."""
    with refusing_over(wire, 400, named=400, counted=999_999_999) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        server.play(wire.reply("Fine."))
        outcome, _ = await run_turn(provider, store, history_of(store, 8), "One more? " * 30)
    assert not outcome.refused and outcome.state is ResponseState.COMPLETE, outcome.error
    assert [r.refused is not None for r in server.requests] == [True, False]
    assert 1.0 <= provider.chars_per_token <= 8.0


async def test_an_error_that_only_mentions_the_context_window_is_not_a_refusal(
    wire: Wire, store: Store
) -> None:
    """Another 400 that happens to say "context window" is shown as it is: nothing is learned,
    trimmed or sent again."""
    message = "The 1M-token context window is not available to this key; remove the beta header."

    def refuse_all(body: dict[str, Any]) -> dict[str, Any]:
        return wire.error_body("invalid_request_error", message)

    with WireServer(validate=refuse_all) as server:
        provider = wire.provider(server.base_url, max_tokens=50)
        conversation = history_of(store, 8)
        outcome, _ = await run_turn(provider, store, conversation, "One more?")
    assert outcome.state is ResponseState.FAILED and not outcome.refused
    assert len(server.requests) == 1
    assert provider.context_window is None and conversation.view_start is None


async def test_a_small_served_window_keeps_half_for_the_prompt_and_asks_for_the_rest(
    store: Store,
) -> None:
    """A llama.cpp server started with a window below max_tokens still answers."""
    with WireServer(validate=WIRES[0].validate) as server:
        server.documents = {"/props": {"default_generation_settings": {"n_ctx": 1024}}}
        provider = WIRES[0].provider(server.base_url, max_tokens=2048)
        await provider.prepare()
        server.play(WIRES[0].reply("Fine."))
        outcome, _ = await run_turn(provider, store, store.create_conversation(), "Hello?")
    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert provider.reply_room == 512
    assert server.requests[0].body["max_tokens"] == 512
