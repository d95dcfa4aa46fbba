"""A conversation's own system prompt and model, on screen and across a restart.

The palette's "System prompt for this conversation" edits the open
conversation's prompt (Ctrl+S saves, Esc cancels, "Use the default" goes back
to the config's); the composer says when the conversation has its own. Ctrl+L
keeps the model picked with the open conversation, and the switcher marks
it. Opening a conversation answers with its own model and prompt, also in a
chatui started again on the same store. Snapshots in
snapshots/test_conversation_settings_app/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Button, TextArea

from chatui.app import ChatApp
from chatui.messages import ModelRef, ResponseState
from chatui.screens.model_switcher import ModelSwitcher
from chatui.screens.system_prompt import SystemPromptDialog
from chatui.store import Store
from chatui.widgets.composer import Composer
from chatui.widgets.status_bar import StatusBar
from tests.support import openai_wire as ow
from tests.support.app import make_app, send, settled, wait_until
from tests.support.clocks import FakeClock
from tests.support.scripted import ScriptedProvider, words
from tests.support.wire import WireServer

SIZE = (80, 24)
CONFIG_PROMPT = "From the config."
HOSTILE = "Line one [b]not markup[/b]\nLine two \x1b[2J cleared?\x07"


@pytest.fixture
def gpt() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as server:
        yield server


def app_on(store: Store, server: WireServer | None = None, **kw: object) -> ChatApp:
    """The app on a scripted provider, its config's OpenAI at `server` (no key needed)."""
    app = make_app(store, ScriptedProvider(words("From the script.")), **kw)
    config = app.session.config
    config.system_prompt = CONFIG_PROMPT
    if server is not None:
        config.openai.base_url = f"{server.base_url}/v1"
    return app


def status(app: ChatApp) -> tuple[str, str]:
    bar = app.chat.query_one(StatusBar)
    return bar.provider, bar.model


def marker(app: ChatApp) -> str:
    """What the composer's border says under it, as plain text."""
    return Content.from_markup(str(app.chat.query_one(Composer).border_subtitle)).plain


async def open_dialog(pilot: Pilot, app: ChatApp) -> SystemPromptDialog:
    """The user's way: the command palette's "System prompt for this conversation"."""
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*"system prompt")
    commands = app.screen.query_one(CommandList)
    await wait_until(pilot, lambda: commands.option_count > 0)
    assert "System prompt for this conversation" in str(commands.get_option_at_index(0).prompt)
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, SystemPromptDialog))
    dialog = app.screen
    assert isinstance(dialog, SystemPromptDialog)
    return dialog


async def write_prompt(pilot: Pilot, app: ChatApp, text: str) -> None:
    """Open the dialog, type `text` in place of what it holds, Ctrl+S."""
    dialog = await open_dialog(pilot, app)
    dialog.query_one(TextArea).clear()
    await pilot.press(*text)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: app.screen is app.chat)


async def type_model(pilot: Pilot, app: ChatApp, provider: str, model: str) -> None:
    """Ctrl+L, the highlight on `provider` with the arrow keys, Tab, the model's name, Enter."""
    await pilot.press("ctrl+l")
    await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))
    switcher = app.screen
    assert isinstance(switcher, ModelSwitcher)
    options = switcher.query_one("#model-options")
    target = [c.provider for c in switcher.choices].index(provider)
    for _ in switcher.choices:
        if options.highlighted == target:
            break
        await pilot.press("down" if target > options.highlighted else "up")
    assert options.highlighted == target
    await pilot.press("tab", *model, "enter")
    await wait_until(pilot, lambda: status(app) == (provider, model))


# Across a restart


async def test_the_conversations_prompt_and_model_come_back_after_a_restart(
    tmp_path: Path, gpt: WireServer
) -> None:
    gpt.play(ow.reply("Bonjour."), ow.reply("Encore bonjour."))
    path = tmp_path / "chat.sqlite3"

    first = Store(path)
    app = app_on(first, gpt)
    async with app.run_test(size=SIZE) as pilot:
        talked = app.chat.conversation.id
        await write_prompt(pilot, app, "Answer in French.")
        await type_model(pilot, app, "openai", "conv-model")
        await send(pilot, "hello")
        await wait_until(pilot, settled(app))
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)
    first.close()

    second = Store(path)  # chatui started again on the same file.
    again = app_on(second, gpt)
    scripted = again.session.provider
    assert isinstance(scripted, ScriptedProvider)
    async with again.run_test(size=SIZE) as pilot:
        assert again.chat.conversation.id != talked  # It starts on a new conversation...
        assert status(again) == ("scripted", "script-1")
        await again.chat.open_conversation(talked)  # ...and the user opens the old one.
        await wait_until(pilot, lambda: status(again) == ("openai", "conv-model"))
        assert marker(again) == "own system prompt"
        await send(pilot, "again")
        await wait_until(pilot, settled(again))
        assert again.last_outcome is not None
        assert again.last_outcome.state is ResponseState.COMPLETE
    second.close()

    assert scripted.records == []
    assert [r.body["model"] for r in gpt.requests] == ["conv-model", "conv-model"]
    assert [r.body["messages"][0] for r in gpt.requests] == [
        {"role": "system", "content": "Answer in French."}
    ] * 2


# Between conversations


async def test_opening_another_conversation_restores_its_own_prompt_and_model(
    store: Store, gpt: WireServer
) -> None:
    french, plain = store.create_conversation(), store.create_conversation()
    store.set_system_prompt(french.id, "Answer in French.")
    store.set_model(french.id, ModelRef("openai", "french-model"))
    store.set_model(plain.id, ModelRef("openai", "plain-model"))
    store.create_conversation()  # The one chatui starts on.
    gpt.play(*(ow.reply("ok") for _ in range(3)))
    app = app_on(store, gpt)
    async with app.run_test(size=SIZE) as pilot:
        start = app.chat.conversation.id
        assert start not in (french.id, plain.id)

        for opened in (french.id, plain.id, french.id):
            await app.chat.open_conversation(opened)
            await send(pilot, "hi")
            await wait_until(pilot, settled(app))
            shown = marker(app)
            assert shown == ("own system prompt" if opened == french.id else "")

        await app.chat.open_conversation(start)  # None of its own: the model in use stays.
        assert status(app) == ("openai", "french-model") and marker(app) == ""

    assert [(r.body["model"], r.body["messages"][0]["content"]) for r in gpt.requests] == [
        ("french-model", "Answer in French."),
        ("plain-model", CONFIG_PROMPT),
        ("french-model", "Answer in French."),
    ]
    assert store.load_conversation(start).model is None


async def test_ctrl_l_keeps_the_model_with_the_open_conversation_and_marks_it(
    store: Store, gpt: WireServer
) -> None:
    app = app_on(store, gpt)
    async with app.run_test(size=SIZE) as pilot:
        conversation = app.chat.conversation.id
        await type_model(pilot, app, "openai", "kept-model")
        assert store.load_conversation(conversation).model == ModelRef("openai", "kept-model")

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))
        rows = [str(o.prompt) for o in app.screen.query_one("#model-options").options]
        (marked,) = [row for row in rows if "this conversation's" in row]
        assert "kept-model" in marked and "● in use · this conversation's" in marked


async def test_a_conversation_whose_model_is_gone_opens_with_the_one_in_use_and_says_why(
    store: Store, tmp_path: Path
) -> None:
    gone = store.create_conversation()
    store.set_model(gone.id, ModelRef("local", str(tmp_path / "deleted.gguf")))
    store.create_conversation()  # The one chatui starts on.
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        await app.chat.open_conversation(gone.id)
        await wait_until(pilot, lambda: bool(app._notifications))
        (notice,) = [n.message for n in app._notifications]
        assert notice.startswith("This conversation's model (local · deleted.gguf)")
        assert "so scripted · script-1 answers instead" in notice
        assert status(app) == ("scripted", "script-1")
        await send(pilot, "still works")
        await wait_until(pilot, settled(app))
        assert app.last_outcome is not None
        assert app.last_outcome.state is ResponseState.COMPLETE
    assert store.load_conversation(gone.id).model == ModelRef(
        "local", str(tmp_path / "deleted.gguf")
    )


# The dialog


async def test_the_dialog_saves_cancels_and_goes_back_to_the_default(store: Store) -> None:
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        conversation = app.chat.conversation
        dialog = await open_dialog(pilot, app)
        assert dialog.query_one(TextArea).text == CONFIG_PROMPT  # The one the next turn sends.
        assert dialog.query_one("#default", Button).disabled  # It has none of its own yet.
        await pilot.press("ctrl+s")  # Unchanged: nothing changes.
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert store.load_conversation(conversation.id).system_prompt is None

        await write_prompt(pilot, app, "Be terse.")
        assert store.load_conversation(conversation.id).system_prompt == "Be terse."
        assert marker(app) == "own system prompt"

        dialog = await open_dialog(pilot, app)
        assert dialog.query_one(TextArea).text == "Be terse."
        await pilot.press(*" Very.", "escape")  # Esc cancels the edit.
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert store.load_conversation(conversation.id).system_prompt == "Be terse."

        dialog = await open_dialog(pilot, app)
        await pilot.click("#default")
        await wait_until(pilot, lambda: app.screen is app.chat)
        assert store.load_conversation(conversation.id).system_prompt is None
        assert marker(app) == ""

        await write_prompt(pilot, app, "")  # Saved empty: no system prompt at all.
        assert store.load_conversation(conversation.id).system_prompt == ""
        await send(pilot, "hi")
        await wait_until(pilot, settled(app))
    scripted = app.session.provider
    assert isinstance(scripted, ScriptedProvider)
    assert [m.role for m in scripted.records[-1].request.messages] == ["user"]


async def test_a_hostile_prompt_is_shown_literally_and_kept_as_it_was(store: Store) -> None:
    conversation = store.create_conversation()
    store.set_system_prompt(conversation.id, HOSTILE)
    app = app_on(store)
    async with app.run_test(size=SIZE) as pilot:
        assert app.chat.conversation.id == conversation.id
        dialog = await open_dialog(pilot, app)
        text = dialog.query_one(TextArea).text
        assert "\x1b" not in text and "\x07" not in text and "␛[2J" in text
        assert "[b]not markup[/b]" in text
        await pilot.press("ctrl+s")  # Unedited: the prompt stays byte for byte.
        await wait_until(pilot, lambda: app.screen is app.chat)
    assert store.load_conversation(conversation.id).system_prompt == HOSTILE


# Snapshots


def test_the_dialog_with_the_default_prompt(snap_compare, store: Store) -> None:
    app = app_on(store, clock=FakeClock())

    async def run_before(pilot: Pilot) -> None:
        await open_dialog(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_dialog_with_the_conversations_own_prompt(snap_compare, store: Store) -> None:
    conversation = store.create_conversation()
    store.set_system_prompt(conversation.id, HOSTILE)
    app = app_on(store, clock=FakeClock())

    async def run_before(pilot: Pilot) -> None:
        await open_dialog(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_composer_says_the_conversation_has_its_own_prompt(snap_compare, store: Store) -> None:
    app = app_on(store, clock=FakeClock())

    async def run_before(pilot: Pilot) -> None:
        await write_prompt(pilot, app, "Be terse.")
        await send(pilot, "Hello")
        await wait_until(pilot, settled(app))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_switcher_marks_the_conversations_model(snap_compare, store: Store) -> None:
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef("anthropic", "claude-kept"))  # No key: it waits.
    store.create_conversation()
    app = app_on(store, clock=FakeClock())

    async def run_before(pilot: Pilot) -> None:
        await app.chat.open_conversation(conversation.id)
        app.clear_notifications()
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
