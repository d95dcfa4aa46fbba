"""Snapshots of the main screens (stored in snapshots/test_snapshots/).

The app gets a fake clock, so the status bar's figures are the same on every
run; the scripted provider stalls where a frame is taken mid-stream.
"""

from __future__ import annotations

from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import ThinkingDelta, ThinkingSigned
from chatui.providers.openai_chat import OpenAIProvider
from chatui.screens.conversations import ConversationList
from chatui.screens.model_switcher import ModelSwitcher
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import (
    date_conversations,
    fix_stop_time,
    make_app,
    send,
    settled,
    wait_until,
)
from tests.support.clocks import FakeClock
from tests.support.remote import SECRET
from tests.support.scripted import RAISE, STALL, ScriptedProvider, words
from tests.support.wire import STALL as WIRE_STALL
from tests.support.wire import Error, WireServer

SIZE = (80, 24)

REPLY = """\
## Bread without yeast

Soda bread needs only:

- flour
- baking soda
- buttermilk

```python
bake(minutes=40)
```
"""


def written(app, count: int):
    return lambda: (views := app.screen.query(AssistantMessage)) and views.last().written >= count


def test_empty_app(snap_compare, store: Store) -> None:
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    assert snap_compare(app, terminal_size=SIZE)


def test_reply_mid_stream(snap_compare, store: Store) -> None:
    script = [*words("Soda bread is a quick bread made with", end=None), STALL]
    provider = ScriptedProvider(script)
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "How do I bake bread without yeast?")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await wait_until(pilot, written(app, 8))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_completed_reply(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(words(REPLY, usage=(20, 31)))
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "How do I bake bread without yeast?")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=(80, 30), run_before=run_before)


def test_interrupted_reply(snap_compare, store: Store) -> None:
    script = [*words("Soda bread is a quick bread made with", end=None), STALL]
    provider = ScriptedProvider(script)
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "How do I bake bread without yeast?")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await wait_until(pilot, written(app, 8))
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await fix_stop_time(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_inline_error(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(
        [*words("Soda bread is", end=None), RAISE],
        error=ConnectionError("connection reset by peer"),
    )
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "How do I bake bread without yeast?")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_conversation_list(snap_compare, store: Store, utc: None) -> None:
    for title in ("Soda bread", "Rust lifetimes", "A [bold]markup[/] title"):
        conversation = store.create_conversation(title)
        store.save_item(conversation.id, UserPrompt(title))
        response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
        store.save_item(conversation.id, response)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        date_conversations(store)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


UNTRUSTED = (
    "Markdown is **rendered**, but [bold red]x[/] and [link=https://evil.example]click[/link] "
    "are shown as typed.\n\nControl sequences: \x1b[2J and \x1b]0;title\x07 stay visible."
)


def test_markup_and_control_sequences_appear_literally(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(words(UNTRUSTED))
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "Say [b]hi[/b] \x1b[31mred")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_no_provider_configured(snap_compare, store: Store) -> None:
    app = make_app(
        store,
        None,
        clock=FakeClock(),
        provider_error="The local model could not be loaded: no such file /models/missing.gguf. "
        "Set local.model_path in the config file (see config.example.toml).",
    )
    assert snap_compare(app, terminal_size=SIZE)


def test_hostile_model_name_and_bidi_controls_appear_literally(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(
        words("The file is named invoice\u202efdp.exe, really."),
        model="m[@click=app.quit]x-[Q4_K_M].gguf",
    )
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "Which file? \u2066hidden\u2069")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_conversations_open_in_another_chatui(snap_compare, store: Store, utc: None) -> None:
    other = Store(store.path)  # Another chatui on the same database.
    theirs = other.create_conversation("Streaming in the other window")
    other.save_item(theirs.id, UserPrompt("Tell me about rye"))
    response = ModelResponse("scripted", "script-1")
    response.append_text("Rye bread is")
    other.save_item(theirs.id, response)
    mine = store.create_conversation("Soda bread")
    store.save_item(mine.id, UserPrompt("Soda bread"))
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        date_conversations(store)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        other.close()


def test_a_reply_still_being_written_elsewhere(snap_compare, store: Store) -> None:
    other = Store(store.path)
    theirs = other.create_conversation("Rye")
    other.save_item(theirs.id, UserPrompt("Tell me about rye"))
    response = ModelResponse("scripted", "script-1")
    response.append_text("Rye bread is made with")
    other.save_item(theirs.id, response)
    other.release_conversation(theirs.id)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        await app.open_conversation(theirs.id)
        await pilot.pause()

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        other.close()


def test_a_collapsed_thinking_block(snap_compare, store: Store) -> None:
    thought = [
        ThinkingDelta("The user asks about bread. "),
        ThinkingDelta("Soda bread [b]fits[/b]."),
    ]
    provider = ScriptedProvider([*thought, ThinkingSigned("sig"), *words("Try soda bread.")])
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await send(pilot, "Bread without yeast?")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_a_remote_error_inline_without_the_key(snap_compare, store: Store) -> None:
    body = aw.error_body("authentication_error", f"invalid x-api-key: {SECRET}")
    with WireServer(validate=aw.validate) as server:
        server.play([Error(401, body)])
        config = AnthropicConfig(api_key=SECRET, base_url=server.base_url, model="claude-test")
        app = make_app(store, AnthropicProvider(config), clock=FakeClock())

        async def run_before(pilot) -> None:
            await send(pilot, "How do I bake bread without yeast?")
            await wait_until(pilot, settled(app))

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_an_interrupted_remote_reply(snap_compare, store: Store) -> None:
    with WireServer(validate=ow.validate) as server:
        server.play([*ow.text("Soda ", "bread ", "is ", "a ", "quick ", "bread"), WIRE_STALL])
        config = OpenAIConfig(base_url=f"{server.base_url}/v1", model="gpt-test")
        app = make_app(store, OpenAIProvider(config), clock=FakeClock())

        async def run_before(pilot) -> None:
            await send(pilot, "How do I bake bread without yeast?")
            await wait_until(pilot, written(app, 6))
            await pilot.press("escape")
            await wait_until(pilot, settled(app))
            await fix_stop_time(pilot)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_model_switcher(snap_compare, store: Store) -> None:
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    app.session.config.openai.base_url = "http://localhost:11434/v1"  # Ollama: no key needed.

    async def run_before(pilot) -> None:
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
