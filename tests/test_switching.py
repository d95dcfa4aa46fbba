"""Switching provider and model: in the session, across real providers, and on screen.

A conversation keeps its history whoever answers it: each reply records its
provider and model, and the next provider gets the repaired history in its
own API's shape (the loopback servers check it the way the real APIs do).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette

from chatui.config import DEFAULT_INTERRUPTED_NOTE, AnthropicConfig, Config, OpenAIConfig
from chatui.messages import ModelResponse, ResponseState
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import ProviderError
from chatui.providers.local.provider import LocalProvider
from chatui.providers.openai_chat import OpenAIProvider
from chatui.providers.registry import ModelChoice
from chatui.screens.model_switcher import ModelSwitcher
from chatui.session import NoProvider, Session
from chatui.store import Store
from chatui.turn import QuietObserver
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.status_bar import StatusBar
from chatui.widgets.welcome import Welcome
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.local import local_config
from tests.support.remote import SECRET, when
from tests.support.scripted import STALL, ScriptedProvider, words
from tests.support.tiny_gguf import write_tiny_model
from tests.support.wire import STALL as STALL_WIRE
from tests.support.wire import WireServer

OPENAI = ModelChoice("openai", "gpt-test", "gpt-test")
ANTHROPIC = ModelChoice("anthropic", "claude-test", "claude-test")


def scripted_factory(made: list[ScriptedProvider], *scripts: list):  # type: ignore[no-untyped-def]
    """A factory whose providers are scripted, named as the choice, one script each."""
    queue = list(scripts)

    def make(choice: ModelChoice) -> ScriptedProvider:
        if choice.provider == "broken":
            raise ProviderError("The broken provider cannot be made.")
        provider = ScriptedProvider(queue.pop(0), model=choice.model)
        provider.name = choice.provider  # type: ignore[misc]
        made.append(provider)
        return provider

    return make


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run(session: Session, conversation, prompt: str):  # type: ignore[no-untyped-def]
    turn = session.new_turn(conversation, prompt, observer=QuietObserver())
    outcome = await turn.run()
    session.turn_finished(turn, outcome)
    return turn, outcome


# The session


async def test_the_next_turn_uses_the_new_provider_and_the_old_one_is_kept(store: Store) -> None:
    first = ScriptedProvider(words("one"), words("three"))
    made: list[ScriptedProvider] = []
    session = Session(
        Config(db_path=str(store.path)), store, first, factory=scripted_factory(made, words("two"))
    )
    start = session.choice
    conversation = session.open_startup_conversation()
    await run(session, conversation, "first")

    session.switch(OPENAI)
    await run(session, conversation, "second")
    assert len(made) == 1 and made[0].records[0].request.messages[-2].content == "one"
    session.switch(start)  # Back: the same provider, not a new one.
    await run(session, conversation, "third")

    replies = [i for i in conversation.items if isinstance(i, ModelResponse)]
    assert [(r.provider, r.model, r.text) for r in replies] == [
        ("scripted", "script-1", "one"),
        ("openai", "gpt-test", "two"),
        ("scripted", "script-1", "three"),
    ]
    assert session.provider is first and len(made) == 1
    await session.open_conversation(None, conversation)
    await session.close()
    assert first.lifecycle[-2:] == ["conversation_left", "close"]
    assert made[0].lifecycle == ["conversation_left", "close"]


async def test_a_provider_that_cannot_be_made_leaves_the_current_one(store: Store) -> None:
    first = ScriptedProvider()
    session = Session(Config(), store, first, factory=scripted_factory([]))
    with pytest.raises(NoProvider, match="cannot be made"):
        session.switch(ModelChoice("broken", "x", "x"))
    assert session.provider is first and session.choice.provider == "scripted"
    assert session.unavailable(ModelChoice("broken", "x", "x")) == (
        "The broken provider cannot be made."
    )


async def test_a_reply_streaming_during_a_switch_keeps_its_provider(store: Store) -> None:
    first = ScriptedProvider([*words("partial", end=None), STALL])
    made: list[ScriptedProvider] = []
    session = Session(Config(), store, first, factory=scripted_factory(made, words("next")))
    conversation = session.open_startup_conversation()
    turn = session.new_turn(conversation, "first", observer=QuietObserver())
    task = asyncio.create_task(turn.run())
    await first.started.wait()
    await first.last.stalled.wait()

    session.switch(OPENAI)
    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    await run(session, conversation, "second")
    replies = [i for i in conversation.items if isinstance(i, ModelResponse)]
    assert [(r.provider, r.state) for r in replies] == [
        ("scripted", ResponseState.INTERRUPTED),
        ("openai", ResponseState.COMPLETE),
    ]
    assert "partial" not in repr(made[0].records[0].request.messages)


def test_each_provider_is_offered_with_why_it_cannot_answer(store: Store) -> None:
    config = Config(db_path=str(store.path))
    session = Session(config, store, None, provider_error="no local model")
    choices = session.choices()
    assert [c.provider for c in choices] == ["local", "openai", "anthropic"]
    assert [c.label for c in choices] == [
        "gemma-3-270m (default)",
        "gpt-4o-mini",
        config.anthropic.model,
    ]
    assert "OPENAI_API_KEY" in (session.unavailable(choices[1]) or "")
    assert "ANTHROPIC_API_KEY" in (session.unavailable(choices[2]) or "")
    config.openai.base_url = "http://127.0.0.1:1/v1"  # A compatible server needs no key.
    fresh = Session(config, store, None)
    assert fresh.unavailable(fresh.choices()[1]) is None


async def test_what_the_welcome_says_of_a_provider_never_shows_its_key(store: Store) -> None:
    """A key in the base_url's query (some gateways take it there) stays out of the words."""
    config = Config()
    config.openai.api_key = SECRET
    config.openai.base_url = f"http://127.0.0.1:{closed_port()}/v1?api_key={SECRET}"
    session = Session(config, store, None)
    session.switch(session.choices()[1])

    problem = await session.problem() or ""

    assert "cannot be reached (nothing is listening there)" in problem
    assert SECRET[8:] not in problem and "api_key=***" in problem


async def test_the_problem_probe_finds_an_unreachable_base_url(store: Store) -> None:
    config = Config()
    config.openai.base_url = f"http://127.0.0.1:{closed_port()}/v1"
    session = Session(config, store, None)
    session.switch(session.choices()[1])
    assert "cannot be reached (nothing is listening there)" in (await session.problem() or "")
    with WireServer() as server:
        config.openai.base_url = f"{server.base_url}/v1"
        reachable = Session(config, store, None)
        reachable.switch(reachable.choices()[1])
        assert await reachable.problem() is None
    assert "no local" in (await Session(config, store, None, provider_error="no local").problem())


# One conversation across real providers: local, Anthropic, OpenAI, and back


@pytest.fixture
def servers() -> Iterator[tuple[WireServer, WireServer]]:
    with WireServer(validate=aw.validate) as claude, WireServer(validate=ow.validate) as gpt:
        yield claude, gpt


async def test_a_conversation_continues_across_providers_and_back(
    servers: tuple[WireServer, WireServer], store: Store, tmp_path: Path
) -> None:
    claude, gpt = servers
    model = write_tiny_model(tmp_path / "tiny.gguf", suppress_eog=True)
    local = LocalProvider(local_config(model, max_tokens=8), state_dir=tmp_path / "kv")
    remote = {
        "anthropic": AnthropicProvider(
            AnthropicConfig(api_key=SECRET, base_url=claude.base_url, model="c-1")
        ),
        "openai": OpenAIProvider(OpenAIConfig(base_url=f"{gpt.base_url}/v1", model="g-1")),
    }
    config = Config(db_path=str(store.path), system_prompt="Be brief.")
    session = Session(config, store, local, factory=lambda choice: remote[choice.provider])
    await session.prepare()
    conversation = session.open_startup_conversation()
    await run(session, conversation, "Hello local")
    local_text = conversation.items[-1].text
    first_prompt = local.last_job.prompt_tokens
    assert local_text.strip()

    # Anthropic: one reply, then one stopped mid-stream.
    claude.play(
        aw.reply("Claude here."), [*aw.start(), *aw.text_block(0, "Half", stop=False), STALL_WIRE]
    )
    session.switch(ANTHROPIC)
    await run(session, conversation, "Hello Claude")
    turn = session.new_turn(conversation, "Go on", observer=QuietObserver())
    task = asyncio.create_task(turn.run())
    await when(lambda: "Half" in conversation.items[-1].text)
    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED
    first, _ = claude.requests
    assert first.refused is None and first.body["system"] == "Be brief."
    assert first.body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": local_text}],
    }

    gpt.play(ow.reply("GPT here."))
    session.switch(OPENAI)
    await run(session, conversation, "Hello GPT")
    (request,) = gpt.requests
    assert request.refused is None
    assert [(m["role"], m["content"]) for m in request.body["messages"]] == [
        ("system", "Be brief."),
        ("user", "Hello local"),
        ("assistant", local_text),
        ("user", "Hello Claude"),
        ("assistant", "Claude here."),
        ("user", f"Go on\n\n{DEFAULT_INTERRUPTED_NOTE}\n\nHello GPT"),
    ]

    session.switch(session.choices()[0])  # Local again, the same provider, its cache warm.
    assert session.provider is local
    _, outcome = await run(session, conversation, "Back home")
    assert outcome.state is ResponseState.COMPLETE
    assert local.last_job.reused >= first_prompt  # The first turn was not evaluated again.
    contents = [m.content for m in local.last_request.messages]
    assert "Claude here." in contents and "GPT here." in contents and contents[-1] == "Back home"
    stored = store.load_conversation(conversation.id).items
    assert [(r.provider, r.state) for r in stored if isinstance(r, ModelResponse)] == [
        ("local", ResponseState.COMPLETE),
        ("anthropic", ResponseState.COMPLETE),
        ("anthropic", ResponseState.INTERRUPTED),
        ("openai", ResponseState.COMPLETE),
        ("local", ResponseState.COMPLETE),
    ]
    await session.close()


# On screen: Ctrl+L, the command palette, the empty conversation's page


async def pick(pilot, provider: str) -> None:  # type: ignore[no-untyped-def]
    """Move the switcher's highlight to `provider`'s first choice with the arrow keys, and Enter."""
    switcher = pilot.app.screen
    assert isinstance(switcher, ModelSwitcher)
    target = [c.provider for c in switcher.choices].index(provider)
    options = switcher.query_one("#model-options")
    for _ in switcher.choices:  # Disabled choices are skipped: one key at a time.
        if options.highlighted == target:
            break
        await pilot.press("down" if target > options.highlighted else "up")
    assert options.highlighted == target
    await pilot.press("enter")


async def test_ctrl_l_switches_to_a_compatible_server_and_replies_name_it(store: Store) -> None:
    with WireServer(validate=ow.validate) as server:
        server.play(ow.reply("From the server."), ow.reply("Typed model."))
        app = make_app(store, ScriptedProvider(words("From the script.")))
        app.session.config.openai.base_url = f"{server.base_url}/v1"
        app.session.config.openai.model = "wire-model"
        async with app.run_test() as pilot:
            await send(pilot, "first")
            await wait_until(pilot, settled(app))

            await pilot.press("ctrl+l")
            await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))
            await pick(pilot, "openai")
            await wait_until(pilot, lambda: app.chat.query_one(StatusBar).provider == "openai")
            assert app.chat.query_one(StatusBar).model == "wire-model"
            await send(pilot, "second")
            await wait_until(pilot, settled(app))

            # Another model of the same provider, typed in the switcher.
            await pilot.press("ctrl+l")
            await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))
            await pilot.press("tab", *"typed-model", "enter")
            await wait_until(pilot, lambda: app.chat.query_one(StatusBar).model == "typed-model")
            await send(pilot, "third")
            await wait_until(pilot, settled(app))

            titles = [str(v.border_title) for v in app.chat.query(AssistantMessage)]
            assert titles == [
                "scripted · script-1",
                "openai · wire-model",
                "openai · typed-model",
            ]
        second, third = server.requests
        assert second.refused is None and third.refused is None
        assert second.body["model"] == "wire-model" and third.body["model"] == "typed-model"
        assert [m["content"] for m in second.body["messages"]][-3:] == [
            "first",
            "From the script.",
            "second",
        ]


async def test_a_provider_without_its_key_is_shown_with_why_and_cannot_be_picked(
    store: Store,
) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))
        switcher = app.screen
        options = switcher.query_one("#model-options")
        index = [c.provider for c in switcher.choices].index("anthropic")
        option = options.get_option_at_index(index)
        assert option.disabled and "ANTHROPIC_API_KEY" in str(option.prompt)
        await pilot.press(*["down"] * len(switcher.choices), "enter")  # Skips the disabled one.
        assert app.session.choice.provider != "anthropic"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ModelSwitcher))
        assert app.session.choice.provider in ("scripted", "local", "openai")


async def test_the_command_palette_offers_the_switch(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Switch model")
        commands = app.screen.query_one(CommandList)
        await wait_until(pilot, lambda: commands.option_count > 0)
        assert "Switch model" in str(commands.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))


async def test_the_empty_conversation_says_who_answers_and_why_it_cannot(store: Store) -> None:
    app = make_app(store, ScriptedProvider(words("hi")))
    app.session.config.openai.base_url = f"http://127.0.0.1:{closed_port()}/v1"
    async with app.run_test() as pilot:
        welcome = app.chat.query_one(Welcome)
        await wait_until(pilot, lambda: "✓ ready" in str(welcome.render()))
        assert "scripted · script-1" in str(welcome.render())

        openai = next(c for c in app.session.choices() if c.provider == "openai")
        await app.chat.switch_model(openai)
        await wait_until(pilot, lambda: "cannot be reached" in str(welcome.render()))
        assert "openai · gpt-4o-mini" in str(welcome.render())

        scripted = next(c for c in app.session.choices() if c.provider == "scripted")
        await app.chat.switch_model(scripted)
        await wait_until(pilot, lambda: "✓ ready" in str(welcome.render()))
        await send(pilot, "hello")  # The page goes as the conversation starts.
        await wait_until(pilot, settled(app))
        assert not app.chat.query(Welcome)
