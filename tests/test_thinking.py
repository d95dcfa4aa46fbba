"""Reasoning: Anthropic thinking blocks and OpenAI-compatible reasoning fields.

Reasoning is never part of the answer's text. Anthropic's signed and
redacted blocks are stored as received and sent back unmodified while
thinking is on (the loopback server checks each signature it gave, and that
a tool loop's last assistant message starts with its thinking); unsigned
reasoning is never sent back to any provider.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from textual.widgets import Static

from chatui.config import AnthropicConfig, ConfigError, OpenAIConfig, load_config
from chatui.messages import ResponseState, TextPart, ThinkingPart, ToolCallPart
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import ThinkingDelta, ThinkingSigned
from chatui.providers.openai_chat import OpenAIProvider
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.thinking import ThinkingView
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.remote import SECRET, when
from tests.support.remote import settings as turn_settings
from tests.support.scripted import STALL as STALL_STEP
from tests.support.scripted import ScriptedProvider, words
from tests.support.turns import RecordingTools, make_turn, stored
from tests.support.wire import STALL, WireServer

THOUGHT = ["The user greets me. ", "I should [b]greet[/b] back."]


@pytest.fixture
def claude() -> Iterator[WireServer]:
    with WireServer(validate=aw.validate) as wire:
        yield wire


@pytest.fixture
def compatible() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as wire:
        yield wire


def anthropic_for(server: WireServer, thinking_budget: int = 2000) -> AnthropicProvider:
    return AnthropicProvider(
        AnthropicConfig(
            api_key=SECRET,
            base_url=server.base_url,
            model="wire-model",
            max_tokens=4000,
            thinking_budget=thinking_budget,
        )
    )


def openai_for(server: WireServer) -> OpenAIProvider:
    config = OpenAIConfig(base_url=f"{server.base_url}/v1", model="wire-model")
    return OpenAIProvider(config)


def thinking_then(*rest: list) -> list:  # type: ignore[type-arg]
    return [*aw.start(), *aw.thinking_block(0, *THOUGHT), *[s for steps in rest for s in steps]]


def thoughts(sink) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.payload.text for e in sink.events if isinstance(e.payload, ThinkingDelta)]


async def test_anthropic_thinking_is_kept_apart_signed_and_stored(
    claude: WireServer, store: Store
) -> None:
    claude.play(thinking_then(aw.text_block(1, "Hello!"), aw.ending()))
    provider = anthropic_for(claude)
    turn, sink = make_turn(store, provider, settings=turn_settings())

    assert (await turn.run()).state is ResponseState.COMPLETE

    assert thoughts(sink) == THOUGHT and sink.texts == ["Hello!"]
    response = stored(store, turn)[-1]
    assert response.text == "Hello!"  # The reasoning is not in the answer.
    (thinking, text) = response.parts
    assert isinstance(thinking, ThinkingPart) and isinstance(text, TextPart)
    assert thinking.text == "".join(THOUGHT)
    assert thinking.signature == aw.sign("".join(THOUGHT))
    assert claude.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    await provider.close()


async def test_anthropic_thinking_goes_back_unmodified_within_a_tool_loop(
    claude: WireServer, store: Store
) -> None:
    first = thinking_then(
        aw.redacted_block(1, "ENCRYPTED=="),
        aw.tool_block(2, "toolu_1", "echo", '{"x": ', "1}"),
        aw.ending("tool_use"),
    )
    claude.play(first, aw.reply("Done."), aw.reply("Again."))
    provider = anthropic_for(claude)
    tools = RecordingTools()
    turn, _ = make_turn(store, provider, settings=turn_settings(), tools=tools)

    assert (await turn.run()).state is ResponseState.COMPLETE

    assert tools.ran == ["toolu_1"]
    second = claude.requests[1]
    assert second.refused is None  # Signature intact, and the thinking comes first.
    assistant = second.body["messages"][1]["content"]
    assert assistant[:2] == [
        {"type": "thinking", "thinking": "".join(THOUGHT), "signature": aw.sign("".join(THOUGHT))},
        {"type": "redacted_thinking", "data": "ENCRYPTED=="},
    ]
    assert [b["type"] for b in assistant[2:]] == ["tool_use"]
    (_thought, redacted) = stored(store, turn)[1].thinking
    assert redacted.data == "ENCRYPTED==" and redacted.redacted and not redacted.text

    # The next turn sends the same blocks in the same bytes: the prompt cache holds.
    again, _ = make_turn(
        store, provider, conversation=turn.conversation, settings=turn_settings(), prompt="more"
    )
    assert (await again.run()).state is ResponseState.COMPLETE
    third = claude.requests[2]
    assert third.refused is None
    earlier = second.body["messages"]
    assert json.dumps(third.body["messages"][: len(earlier)]) == json.dumps(earlier)
    await provider.close()


async def test_esc_mid_thinking_keeps_the_partial_thought_and_never_sends_it(
    claude: WireServer, store: Store
) -> None:
    claude.play(
        [*aw.start(), *aw.thinking_block(0, "Let me think", " about", stop=False), STALL],
        aw.reply("Hi."),
    )
    provider = anthropic_for(claude)
    turn, sink = make_turn(store, provider, settings=turn_settings())
    task = asyncio.create_task(turn.run())
    await when(lambda: len(thoughts(sink)) == 2)

    assert turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    (part,) = stored(store, turn)[-1].parts
    assert isinstance(part, ThinkingPart)
    assert (part.text, part.signature) == ("Let me think about", "")

    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=turn_settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    assert claude.requests[1].refused is None
    assert "Let me think" not in json.dumps(claude.requests[1].body)
    await provider.close()


async def test_with_thinking_off_no_thinking_block_is_sent(
    claude: WireServer, store: Store
) -> None:
    claude.play(thinking_then(aw.text_block(1, "Hello!"), aw.ending()), aw.reply("Fine."))
    provider = anthropic_for(claude)
    turn, _ = make_turn(store, provider, settings=turn_settings())
    await turn.run()

    plain = anthropic_for(claude, thinking_budget=0)
    second, _ = make_turn(store, plain, conversation=turn.conversation, settings=turn_settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    body = claude.requests[1].body
    assert "thinking" not in body
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Hello!"}]
    await provider.close()
    await plain.close()


def test_the_server_refuses_a_thinking_block_changed_or_missing() -> None:
    """The checks the tests above rely on can fail."""
    signed = {"type": "thinking", "thinking": "x", "signature": aw.sign("x")}
    call = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    body = {
        "max_tokens": 10,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [signed, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
        ],
    }
    assert aw.validate(body) is None
    signed["thinking"] = "y"
    assert "Invalid `signature`" in aw.validate(body)["error"]["message"]
    body["messages"][1]["content"] = [call]
    assert "must start with a thinking block" in aw.validate(body)["error"]["message"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_openai_compatible_reasoning_is_shown_apart_and_never_sent_back(
    compatible: WireServer, store: Store, field: str
) -> None:
    compatible.play(
        [
            *ow.reasoning("Thinking ", "hard.", field=field),
            *ow.text("The answer", " is 4."),
            *ow.ending(),
        ],
        ow.reply("Sure."),
    )
    provider = openai_for(compatible)
    turn, sink = make_turn(store, provider, settings=turn_settings())

    assert (await turn.run()).state is ResponseState.COMPLETE

    assert thoughts(sink) == ["Thinking ", "hard."]
    response = stored(store, turn)[-1]
    assert response.text == "The answer is 4."
    assert [p.text for p in response.thinking] == ["Thinking hard."]
    second, _ = make_turn(store, provider, conversation=turn.conversation, settings=turn_settings())
    assert (await second.run()).state is ResponseState.COMPLETE
    sent = json.dumps(compatible.requests[1].body)
    assert "Thinking hard" not in sent and "The answer is 4." in sent
    await provider.close()


async def test_a_reply_of_reasoning_and_a_tool_call_keeps_them_in_order(
    compatible: WireServer, store: Store
) -> None:
    compatible.play(
        [
            *ow.reasoning("I need a tool."),
            *ow.tool_call(0, "call_1", "echo", '{"x"', ": 2}"),
            *ow.ending("tool_calls"),
        ],
        ow.reply("Two."),
    )
    provider = openai_for(compatible)
    turn, _ = make_turn(store, provider, settings=turn_settings(), tools=RecordingTools())
    assert (await turn.run()).state is ResponseState.COMPLETE
    first = stored(store, turn)[1]
    assert [type(p) for p in first.parts] == [ThinkingPart, ToolCallPart]
    assert compatible.requests[1].refused is None
    await provider.close()


@pytest.mark.parametrize("budget", [1, 1023, 2048, 5000])
def test_a_thinking_budget_out_of_range_is_a_config_error(tmp_path, budget: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[anthropic]\nmax_tokens = 2048\nthinking_budget = {budget}\n")
    with pytest.raises(ConfigError, match=r"anthropic\.thinking_budget"):
        load_config(path, env={})


def test_a_thinking_budget_in_range_is_taken(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[anthropic]\nmax_tokens = 4096\nthinking_budget = 1024\n")
    assert load_config(path, env={}).anthropic.thinking_budget == 1024


# On screen: collapsed, apart from the answer, literal when opened.


async def test_thinking_streams_collapsed_and_opens_to_literal_text(store: Store) -> None:
    script = [ThinkingDelta("Soda bread "), ThinkingDelta("[b]fits[/b] \x1b[2J."), STALL_STEP]
    provider = ScriptedProvider(script)
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "Bread?")
        await provider.last.stalled.wait()
        view = await thinking_view(pilot, app)
        await wait_until(pilot, lambda: str(view.title) == "Thinking…")
        assert view.collapsed and body_text(view) == ""  # Nothing rendered while closed.
        message = app.chat.query_one(AssistantMessage)
        assert message.written == 0  # Not one delta went to the answer's Markdown.

        await pilot.click(view.query_one("CollapsibleTitle"))
        await wait_until(pilot, lambda: not view.collapsed)
        assert body_text(view) == "Soda bread [b]fits[/b] ␛[2J."  # Literal, control made visible.

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert str(view.title) == "Thought · 4 words"
        response = store.load_conversation(app.chat.conversation.id).items[-1]
        assert response.state is ResponseState.INTERRUPTED
        assert [p.text for p in response.thinking] == ["Soda bread [b]fits[/b] \x1b[2J."]


async def test_thinking_is_shown_before_its_answer_live_and_when_reloaded(store: Store) -> None:
    script = [ThinkingDelta("Short thought."), ThinkingSigned("s"), *words("The answer.")]
    app = make_app(store, ScriptedProvider(script))
    async with app.run_test() as pilot:
        await send(pilot, "Q?")
        await wait_until(pilot, settled(app))
        for _ in range(2):  # As streamed, then as loaded from the store.
            message = app.chat.query_one(AssistantMessage)
            kinds = [type(c).__name__ for c in message.children if c.display]
            assert kinds[:2] == ["ThinkingView", "ReplyMarkdown"]
            assert str(message.query_one(ThinkingView).title) == "Thought · 2 words"
            await app.chat.show_conversation(app.chat.conversation)
            await pilot.pause()


async def thinking_view(pilot, app) -> ThinkingView:  # type: ignore[no-untyped-def]
    await wait_until(pilot, lambda: bool(app.chat.query(ThinkingView)))
    return app.chat.query_one(ThinkingView)


def body_text(view: ThinkingView) -> str:
    return str(view.query_one(".thinking-text", Static).render())
