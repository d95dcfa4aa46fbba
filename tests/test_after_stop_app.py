"""After a reply, on screen: Continue (Ctrl+G), Retry (Ctrl+R), Edit (Ctrl+E), versions (Alt+←/→).

Each drives the app with Pilot on the scripted provider, and checks what is
on screen, what is stored, and what the provider was sent.
"""

from __future__ import annotations

import sqlite3

import pytest
from textual.command import CommandList, CommandPalette

from chatui.app import ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage, UserMessage
from chatui.widgets.composer import Composer
from chatui.widgets.reply_markdown import ReplyMarkdown
from chatui.widgets.tool_call import ToolCallView
from chatui.widgets.versions import EDIT_EARLIER, EDIT_LAST, BranchedFrom, EditBanner
from tests.support.app import (
    conversation_rows,
    make_app,
    press_and_settle,
    send,
    settled,
    stop_midway,
    wait_until,
)
from tests.support.scripted import STALL, ScriptedProvider, tool_call, words


def replies(app: ChatApp) -> list[AssistantMessage]:
    return list(app.chat.query(AssistantMessage))


def marker(view: AssistantMessage) -> str:
    shown = view.query_one(".marker")
    return str(shown.render()) if shown.display else ""


def subtitle(widget: AssistantMessage | UserMessage) -> str:
    return str(widget.border_subtitle)


def composer(app: ChatApp) -> Composer:
    return app.chat.query_one(Composer)


def banner(app: ChatApp) -> str:
    shown = app.chat.query_one(EditBanner)
    return str(shown.render()) if shown.display else ""


def stored_responses(store: Store, conversation_id: str) -> list[ModelResponse]:
    items = store.load_conversation(conversation_id).all_items()
    return [item for item in items if isinstance(item, ModelResponse)]


def sent_texts(provider: ScriptedProvider, n: int) -> list[str]:
    """The contents of the messages the provider's `n`th request carried."""
    return [str(message.content) for message in provider.records[n].request.messages]


async def stop_a_reply_and_its_continue(
    pilot, app: ChatApp, provider: ScriptedProvider, prompt: str
) -> None:
    """Send `prompt` and Esc midway through the reply; then Ctrl+G, and Esc midway again."""
    await send(pilot, prompt)
    await stop_midway(pilot, app, provider)
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: len(provider.records) == 2)
    await stop_midway(pilot, app, provider)


# Continue


async def test_continue_after_a_stop_goes_on_in_the_same_reply(store: Store) -> None:
    provider = ScriptedProvider(
        [*words("Soda bread is a quick", end=None), STALL], words(" bread made with soda.")
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "bread?")
        await stop_midway(pilot, app, provider)
        (stopped,) = replies(app)
        assert marker(stopped) == "■ interrupted · Ctrl+G continue · Ctrl+R retry"

        await press_and_settle(pilot, app, "ctrl+g")

        (view,) = replies(app)
        assert view is stopped  # The same reply, reopened: no second one.
        assert view.response.text == "Soda bread is a quick bread made with soda."
        assert len(view.query(ReplyMarkdown)) == 1  # One text run: no seam.
        assert marker(view) == "↻ continued"
        assert "-continued" in view.classes and "-interrupted" not in view.classes
        assert provider.records[1].request.continuing
        (stored,) = stored_responses(store, app.chat.conversation.id)
        assert stored.text == "Soda bread is a quick bread made with soda."
        assert stored.state is ResponseState.COMPLETE and stored.continued == 1


async def test_continue_after_a_stop_inside_a_tool_call_resumes_from_the_text(
    store: Store,
) -> None:
    cut = [*words("Let me look", end=None), *tool_call(0, "c1", "read_file", ['{"pa'], end=False)]
    provider = ScriptedProvider([*cut, STALL], words(" it up: done."))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "look it up")
        await stop_midway(pilot, app, provider)
        assert len(app.chat.query(ToolCallView)) == 1

        await press_and_settle(pilot, app, "ctrl+g")

        (view,) = replies(app)
        assert not view.query(ToolCallView)  # The cut-off call's view went with the call.
        assert view.response.tool_calls == []
        assert view.response.text == "Let me look it up: done."
        (stored,) = stored_responses(store, app.chat.conversation.id)
        assert stored.tool_calls == [] and stored.text == "Let me look it up: done."


async def test_continue_twice_after_the_token_limit_is_one_reply(store: Store) -> None:
    provider = ScriptedProvider(
        words("One,", end="length"), words(" two,", end="length"), words(" three.")
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "count")
        await wait_until(pilot, settled(app))
        (view,) = replies(app)
        assert marker(view) == "… stopped at the token limit · Ctrl+G continue"

        await press_and_settle(pilot, app, "ctrl+g")
        assert marker(view) == "↻ continued · … stopped at the token limit · Ctrl+G continue"
        await press_and_settle(pilot, app, "ctrl+g")

        assert replies(app) == [view]
        assert view.response.text == "One, two, three."
        assert marker(view) == "↻ continued"
        (stored,) = stored_responses(store, app.chat.conversation.id)
        assert stored.text == "One, two, three." and stored.continued == 2


async def test_escape_during_a_continue_marks_it_interrupted_and_continuable_again(
    store: Store,
) -> None:
    provider = ScriptedProvider(
        [*words("First part", end=None), STALL],
        [*words(" and more", end=None), STALL],
        words(" to the end."),
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await stop_a_reply_and_its_continue(pilot, app, provider, "go")

        (view,) = replies(app)
        assert view.response.text == "First part and more"
        assert view.response.state is ResponseState.INTERRUPTED
        assert marker(view) == "■ interrupted · Ctrl+G continue · Ctrl+R retry"
        assert app.chat.check_action("continue_reply", ()) is True

        await press_and_settle(pilot, app, "ctrl+g")
        assert view.response.text == "First part and more to the end."
        (stored,) = stored_responses(store, app.chat.conversation.id)
        assert stored.text == "First part and more to the end." and stored.continued == 2


async def test_a_continue_that_brings_nothing_leaves_the_reply_as_it_was(store: Store) -> None:
    cut = [*words("Let me look", end=None), *tool_call(0, "c1", "read_file", ['{"pa'], end=False)]
    provider = ScriptedProvider([*cut, STALL], [STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await stop_a_reply_and_its_continue(pilot, app, provider, "look it up")

        (view,) = replies(app)
        assert view.response.continued == 0
        assert len(view.query(ToolCallView)) == 1  # Its cut-off call is shown again.
        assert marker(view) == "■ interrupted · Ctrl+G continue · Ctrl+R retry"
        (stored,) = stored_responses(store, app.chat.conversation.id)
        assert stored.continued == 0 and len(stored.tool_calls) == 1


async def test_continue_a_reply_stored_before_a_restart(store: Store) -> None:
    conversation = store.create_conversation("stored")
    store.save_item(conversation.id, UserPrompt("bread?"))
    response = ModelResponse("scripted", "script-1", state=ResponseState.INTERRUPTED)
    response.append_text("Soda bread is")
    store.save_item(conversation.id, response)
    store.release_conversation(conversation.id)
    provider = ScriptedProvider(words(" quick."))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await app.open_conversation(conversation.id)
        await pilot.pause()
        (view,) = replies(app)

        await press_and_settle(pilot, app, "ctrl+g")

        assert replies(app) == [view]
        assert view.response.text == "Soda bread is quick."
        assert marker(view) == "↻ continued"
        (stored,) = stored_responses(store, conversation.id)
        assert stored.text == "Soda bread is quick." and stored.continued == 1


# Retry and versions


async def test_retry_shows_version_two_and_alt_left_flips_back_for_the_history(
    store: Store,
) -> None:
    provider = ScriptedProvider(
        words("first answer"), words("second answer"), words("reply to next")
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "question")
        await wait_until(pilot, settled(app))
        assert subtitle(replies(app)[0]) == ""

        await press_and_settle(pilot, app, "ctrl+r")
        (view,) = replies(app)  # The old reply left the screen.
        assert view.response.text == "second answer"
        assert subtitle(view) == "‹ 2/2 ›"
        assert [w.item_id for w in app.chat.query(UserMessage)] == [
            app.chat.conversation.items[0].id
        ]

        await pilot.press("alt+left")
        await wait_until(pilot, lambda: replies(app)[0].response.text == "first answer")
        assert subtitle(replies(app)[0]) == "‹ 1/2 ›"
        assert app.chat.check_action("version", (-1,)) is None  # No version before the first.

        await send(pilot, "next")
        await wait_until(pilot, lambda: len(provider.records) == 3)
        await wait_until(pilot, settled(app))
        sent = sent_texts(provider, 2)
        assert "first answer" in sent and "second answer" not in sent


async def test_versions_and_the_one_shown_survive_a_restart(store: Store) -> None:
    provider = ScriptedProvider(words("first answer"), words("second answer"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "question")
        await wait_until(pilot, settled(app))
        await press_and_settle(pilot, app, "ctrl+r")
        await pilot.press("alt+left")
        await wait_until(pilot, lambda: replies(app)[0].response.text == "first answer")
        conversation_id = app.chat.conversation.id

    again = make_app(store, ScriptedProvider())
    async with again.run_test() as pilot:
        await again.open_conversation(conversation_id)
        await pilot.pause()
        (view,) = replies(again)
        assert view.response.text == "first answer"
        assert subtitle(view) == "‹ 1/2 ›"
        await pilot.press("alt+right")
        await wait_until(pilot, lambda: replies(again)[0].response.text == "second answer")
        assert subtitle(replies(again)[0]) == "‹ 2/2 ›"


# Edit


async def edit_hello_over_a_draft(pilot, app: ChatApp) -> None:
    """Send "hello"; once answered, type "my draft", then Ctrl+E: "hello" is back to edit."""
    await send(pilot, "hello")
    await wait_until(pilot, settled(app))
    composer(app).text = "my draft"
    await pilot.press("ctrl+e")
    assert composer(app).text == "hello"


async def test_editing_the_last_prompt_sends_a_new_version_and_gives_the_draft_back(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("old reply"), words("new reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await edit_hello_over_a_draft(pilot, app)
        assert banner(app) == EDIT_LAST
        await pilot.press("!")
        await press_and_settle(pilot, app, "enter")

        assert banner(app) == ""
        assert [str(w.render()) for w in app.chat.query(UserMessage)] == ["hello!"]
        (view,) = replies(app)
        assert view.response.text == "new reply" and subtitle(view) == "‹ 2/2 ›"
        assert composer(app).text == "my draft"
        conversation = store.load_conversation(app.chat.conversation.id)
        assert [i.text for i in conversation.items if isinstance(i, UserPrompt)] == ["hello!"]
        stored = [i.text for i in conversation.all_items() if isinstance(i, UserPrompt)]
        assert stored == ["hello", "hello!"]
        assert "hello" not in sent_texts(provider, 1)


async def test_escape_ends_an_edit_and_puts_the_text_back(store: Store) -> None:
    provider = ScriptedProvider(words("reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await edit_hello_over_a_draft(pilot, app)

        await pilot.press("escape")
        assert composer(app).text == "my draft"
        assert banner(app) == "" and app.chat.editing is None


async def test_editing_an_earlier_prompt_opens_a_fork_and_leaves_the_original_untouched(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("one"), words("two"), words("branched reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "first")
        await wait_until(pilot, settled(app))
        await send(pilot, "second")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))
        original = app.chat.conversation
        rows = conversation_rows(store, original.id)

        await pilot.press("ctrl+e", "ctrl+e")  # Again: the prompt before the last.
        assert composer(app).text == "first"
        assert banner(app) == EDIT_EARLIER
        await pilot.press("!")
        await press_and_settle(pilot, app, "enter")

        fork = app.chat.conversation
        assert fork.id != original.id
        assert fork.branched_from is not None and fork.branched_from.conversation_id == original.id
        top = app.chat.query_one("#messages").children[1]  # After the fold's spacer.
        assert isinstance(top, BranchedFrom)
        assert str(top.render()) == f"Branched from “{original.title}”"
        assert [str(w.render()) for w in app.chat.query(UserMessage)] == ["first!"]
        assert sent_texts(provider, 2)[-1] == "first!"
        assert conversation_rows(store, original.id) == rows


async def test_a_branched_from_title_is_shown_as_plain_text(store: Store) -> None:
    conversation = store.create_conversation("[b]bold[/b] \x1b[31mred")
    prompt = UserPrompt("first")
    store.save_item(conversation.id, prompt)
    store.release_conversation(conversation.id)
    fork = store.fork_conversation(conversation.id, prompt.id)
    store.release_conversation(fork.id)
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await app.open_conversation(fork.id)
        await pilot.pause()
        text = app.chat.query_one(BranchedFrom).render()
        assert "[b]bold[/b]" in str(text) and "\x1b" not in str(text)


# Keys and the palette


async def test_the_palette_offers_the_choices_by_name_and_runs_them(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL], words(" and the rest."))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Continue the reply" not in titles  # Not while the reply streams.
        assert app.chat.check_action("retry", ()) is None  # Dimmed in the footer.
        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert {"Continue the reply", "Retry the reply", "Edit the prompt"} <= set(titles)

        before = app.chat.turn
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*["space" if c == " " else c for c in "Continue the reply"])
        await wait_until(pilot, lambda: app.screen.query_one(CommandList).option_count == 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat.turn is not before and settled(app)())
        assert replies(app)[0].response.text == "partial and the rest."


async def test_a_reply_the_disk_was_too_full_to_store_is_not_a_version_to_flip_to(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply whose first write failed stays on screen but was never stored: retried,
    it is not a version (flipping to it ended the app: the store could not show it)."""
    provider = ScriptedProvider(words("second answer"), words("reply to next"))
    app = make_app(store, provider)
    save_item = store.save_item

    def full_for_replies(conversation_id: str, item: object, *args: object) -> None:
        if isinstance(item, ModelResponse):
            raise sqlite3.OperationalError("database or disk is full")
        save_item(conversation_id, item, *args)  # type: ignore[arg-type]

    async with app.run_test() as pilot:
        monkeypatch.setattr(store, "save_item", full_for_replies)
        await send(pilot, "question")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.FAILED
        monkeypatch.setattr(store, "save_item", save_item)  # Space was freed.
        await press_and_settle(pilot, app, "ctrl+r")
        await pilot.press("alt+left")
        await send(pilot, "next")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))

        assert app.is_running
        assert [subtitle(view) for view in replies(app)] == ["", ""]
        assert app.last_outcome.state is ResponseState.COMPLETE
        stored_path = store.load_conversation(app.chat.conversation.id).items
        assert [getattr(item, "text", None) for item in stored_path] == [
            "question",
            "second answer",
            "next",
            "reply to next",
        ]
