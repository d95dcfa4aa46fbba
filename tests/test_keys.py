"""Keys that never lose work: Ctrl+C, drafts, Ctrl+E and Up, stray typing, scrolling, Ctrl+N."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from textual import events
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Collapsible
from textual.widgets.text_area import Selection

from chatui._textual.input import InputPump
from chatui.app import QUIT_HINT, ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import PromptProgress, StreamEnd, TextDelta
from chatui.screens.approval import ApprovalDialog
from chatui.screens.conversations import ConversationList
from chatui.screens.drafts import DRAFT_SAVE_DELAY
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.composer import Composer
from chatui.widgets.message_list import MessageList, MoreBelow
from chatui.widgets.status_bar import StatusBar
from tests.support.app import make_app, screen_text, send, settled, wait_until
from tests.support.clocks import FakeClock, LoopClock
from tests.support.scripted import STALL, Gate, ScriptedProvider, calls, tool_call, words

SIZE = (80, 24)


def key(name: str) -> events.Key:
    return events.Key(name, " " if name == "space" else name if len(name) == 1 else None)


def type_keys(app: ChatApp, text: str) -> None:
    """Post keys as one read from a terminal delivers them: all at once, no await between."""
    for char in text:
        app.post_message(key("enter" if char == "\r" else "space" if char == " " else char))


def notices(app: ChatApp) -> list[str]:
    return [notification.message for notification in app._notifications]


def composer(app: ChatApp) -> Composer:
    return app.chat.query_one(Composer)


def prompts(store: Store, conversation_id: str) -> list[str]:
    items = store.load_conversation(conversation_id).items
    return [item.text for item in items if isinstance(item, UserPrompt)]


def stored_conversation(store: Store, *exchanges: tuple[str, ResponseState]) -> str:
    """A conversation of (prompt, how its reply ended) exchanges; its id."""
    conversation = store.create_conversation("stored")
    for prompt, state in exchanges:
        store.save_item(conversation.id, UserPrompt(prompt))
        response = ModelResponse("scripted", "script-1", state=state)
        response.append_text(f"answer to {prompt}")
        store.save_item(conversation.id, response)
    store.release_conversation(conversation.id)
    return conversation.id


@asynccontextmanager
async def answered(app: ChatApp, prompt: str) -> AsyncIterator[Pilot]:
    """Run `app`; send `prompt` and hand over once its reply is on screen."""
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, prompt)
        await wait_until(pilot, settled(app))
        yield pilot


@asynccontextmanager
async def opened(app: ChatApp, conversation_id: str) -> AsyncIterator[Pilot]:
    """Run `app` with the stored conversation `conversation_id` open."""
    async with app.run_test(size=SIZE) as pilot:
        await app.open_conversation(conversation_id)
        yield pilot


async def type_draft(pilot: Pilot, app: ChatApp, text: str) -> None:
    """Type `text` as one read into an empty composer; wait until the composer holds it."""
    type_keys(app, text)
    await wait_until(pilot, lambda: composer(app).text == text)


# 1. Ctrl+C: a stop like Esc; a copy with text selected; a quit only when pressed twice


async def hang() -> str:
    """Wait for ever."""
    await asyncio.Event().wait()
    return ""


def touch(path: str) -> str:
    """Touch a file."""
    return f"touched {path}"


def stalled(app: ChatApp, provider: ScriptedProvider) -> bool:
    return bool(provider.records) and provider.last.stalled.is_set()


def status_line(app: ChatApp) -> str:
    return str(app.chat.query_one(StatusBar).render())


PHASES = {
    # A script, the tools, and when the phase is reached.
    "waiting": ([STALL], None, stalled),
    "reading the prompt": (
        [PromptProgress(5, 10), STALL],
        None,
        lambda app, provider: "reading the prompt 50%" in status_line(app),
    ),
    "streaming": ([*words("partial", end=None), STALL], None, stalled),
    "mid tool call": (
        [*tool_call(0, "c1", "touch", ['{"path": "ha'], end=False), STALL],
        ToolRegistry([Tool(touch)]),
        stalled,
    ),
    "approval dialog": (
        calls(("c1", "touch", '{"path": "a"}')),
        ToolRegistry([Tool(touch, needs_approval=True)]),
        lambda app, provider: isinstance(app.screen, ApprovalDialog),
    ),
    "tool running": (
        calls(("c1", "hang", "{}")),
        ToolRegistry([Tool(hang)]),
        lambda app, provider: "running tools" in status_line(app),
    ),
}


@pytest.mark.parametrize("phase", PHASES)
async def test_ctrl_c_stops_a_reply_like_esc_timed_from_its_byte(store: Store, phase: str) -> None:
    script, tools, reached = PHASES[phase]
    provider = ScriptedProvider(script)
    app = make_app(store, provider, tools=tools)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, lambda: reached(app, provider))

        ctrl_c = events.Key("ctrl+c", "\x03")
        ctrl_c.time = time.monotonic() - 0.5  # Its byte was read half a second ago.
        app._driver.send_message(ctrl_c)  # As the terminal's reader hands it over.
        await wait_until(pilot, settled(app))

        status = app.chat.query_one(StatusBar)
        assert app.is_running
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert status.state == "stopped" and not isinstance(app.screen, ApprovalDialog)
        assert app.chat.turn_view.stop_requested_at == ctrl_c.time  # The same path as Esc.
        assert 500 <= status.stop_ms == (app.chat.turn_view.stop_drawn_at - ctrl_c.time) * 1000
        assert QUIT_HINT not in notices(app)  # A stop is not a quit's first press.


@asynccontextmanager
async def mid_reply(store: Store) -> AsyncIterator[tuple[ChatApp, Pilot]]:
    """Run an app whose reply to "go" has streamed a word and stalls until it is stopped."""
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        yield app, pilot


@pytest.mark.parametrize("sequence", ["\x03", "\x1b[99;5u"], ids=["byte 0x03", "kitty"])
async def test_ctrl_c_from_the_terminal_stops_on_its_first_trip_through_the_loop(
    store: Store, sequence: str
) -> None:
    async with mid_reply(store) as (app, pilot):
        pump = InputPump(app._driver.send_message)

        pump.feed(sequence, read_at=time.monotonic())  # As the input thread parses a read.
        await asyncio.sleep(0)  # One trip: callbacks queued before this task's next step run.
        assert app.chat.turn.token.cancelled
        await wait_until(pilot, settled(app))
        assert app.is_running and app.last_outcome.state is ResponseState.INTERRUPTED


async def test_ctrl_c_with_text_selected_copies_it_and_stops_nothing(store: Store) -> None:
    async with mid_reply(store) as (app, pilot):
        composer(app).text = "copy this, not that"
        composer(app).selection = Selection((0, 0), (0, 9))

        await pilot.press("ctrl+c")
        await pilot.pause()

        assert app.clipboard == "copy this"
        assert app.is_running and app.chat.turn.running
        await pilot.press("escape")
        await wait_until(pilot, settled(app))


async def test_one_ctrl_c_never_quits_it_says_how_and_a_second_soon_after_quits(
    store: Store,
) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        clock = LoopClock()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running
        assert notices(app) == [QUIT_HINT]

        await clock.advance(2.5)  # Too late to count as the second press.
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running

        await clock.advance(1.5)  # Soon enough after the last one.
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running)
    assert app.return_code == 0


async def test_a_ctrl_c_that_stops_a_reply_starts_the_count_to_quit_afresh(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await pilot.press("ctrl+c")  # Nothing to stop: says how to quit.
        await pilot.pause()
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await pilot.press("ctrl+c")  # Stops the reply (soon after the first press).
        await wait_until(pilot, settled(app))

        await pilot.press("ctrl+c")  # The first press since the stop: it only says how.
        await pilot.pause()
        assert app.is_running
        assert notices(app) == [QUIT_HINT, QUIT_HINT]
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running)


async def test_ctrl_c_in_the_conversation_list_stops_the_reply_below(store: Store) -> None:
    async with mid_reply(store) as (app, pilot):
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))

        await pilot.press("ctrl+c")
        await wait_until(pilot, settled(app))
        assert app.is_running and app.last_outcome.state is ResponseState.INTERRUPTED


# 2. A draft survives everything


async def test_quitting_with_ctrl_c_keeps_the_draft(store: Store) -> None:
    async with mid_reply(store) as (app, pilot):
        await type_draft(pilot, app, "half a thought")
        conversation_id = app.chat.conversation.id

        await pilot.press("ctrl+c")  # Stops the reply.
        await wait_until(pilot, settled(app))
        await pilot.press("ctrl+c", "ctrl+c")  # Quits (no time to store it meanwhile).
        await wait_until(pilot, lambda: not app.is_running)

    assert store.load_draft(conversation_id) == "half a thought"


async def test_a_draft_stays_with_its_conversation_across_ctrl_n_and_the_list(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("first answer"))
    app = make_app(store, provider)
    async with answered(app, "first question") as pilot:
        first = app.chat.conversation.id
        await type_draft(pilot, app, "draft one")

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.chat.conversation.id != first)
        second = app.chat.conversation.id
        assert composer(app).text == ""  # The new conversation's own (empty) draft.
        assert store.load_draft(first) == "draft one"  # Stored as it was left.
        await type_draft(pilot, app, "draft two")

        await app.open_conversation(first)
        assert composer(app).text == "draft one"
        await app.open_conversation(second)
        assert composer(app).text == "draft two"
        # The other way, through the list: the first is listed second (older).
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.chat.conversation.id == first)
        assert composer(app).text == "draft one"


async def test_a_draft_comes_back_after_a_restart(store: Store) -> None:
    old = stored_conversation(store, ("q", ResponseState.COMPLETE))
    app = make_app(store, ScriptedProvider())
    async with opened(app, old) as pilot:
        await type_draft(pilot, app, "second thought")
        await pilot.press("ctrl+n")  # A new, empty conversation with a draft of its own.
        await type_draft(pilot, app, "new idea")
        empty = app.chat.conversation.id
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    again = make_app(store, ScriptedProvider())  # A second chatui on the same store.
    async with again.run_test():
        assert again.chat.conversation.id == empty  # The latest, empty: opened at start.
        assert composer(again).text == "new idea"
        await again.open_conversation(old)
        assert composer(again).text == "second thought"


async def test_quitting_with_a_draft_in_a_conversation_reopens_it_with_the_draft(
    store: Store,
) -> None:
    app = make_app(store, ScriptedProvider(words("An answer.")))
    async with answered(app, "a question") as pilot:
        talked = app.chat.conversation.id
        await type_draft(pilot, app, "a follow-up I have not sent")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    again = make_app(store, ScriptedProvider())
    async with again.run_test() as pilot:
        await pilot.pause()
        assert again.chat.conversation.id == talked
        assert composer(again).text == "a follow-up I have not sent"
        assert "An answer." in screen_text(again)


async def test_a_draft_is_stored_a_moment_after_typing_stops(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        clock = LoopClock()
        await type_draft(pilot, app, "typed")
        await pilot.pause()
        conversation_id = app.chat.conversation.id
        assert store.load_draft(conversation_id) == ""  # Not at every key.

        await clock.advance(DRAFT_SAVE_DELAY)
        assert store.load_draft(conversation_id) == "typed"  # Safe from a crash from now on.


async def delete_the_open_conversation(pilot: Pilot, app: ChatApp) -> None:
    """Delete the open conversation in the list (Ctrl+O, Ctrl+D, Enter); the list stays open."""
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
    await pilot.press("ctrl+d")  # The open conversation is the one highlighted.
    await wait_until(pilot, lambda: not isinstance(app.screen, ConversationList))
    await pilot.press("enter")  # Confirm.
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))


async def test_the_draft_of_a_deleted_conversation_comes_along(store: Store) -> None:
    app = make_app(store, ScriptedProvider(words("ok")))
    async with answered(app, "doomed") as pilot:
        doomed = app.chat.conversation.id
        await type_draft(pilot, app, "keep me")

        await delete_the_open_conversation(pilot, app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.chat.conversation.id != doomed)

        assert composer(app).text == "keep me"
        assert store.load_draft(app.chat.conversation.id) == "keep me"


async def test_text_typed_in_the_same_read_as_ctrl_n_stays_with_its_conversation(
    store: Store,
) -> None:
    app = make_app(store, ScriptedProvider(words("an answer")))
    async with answered(app, "first question") as pilot:
        first = app.chat.conversation.id

        type_keys(app, "typed fast")
        app.post_message(key("ctrl+n"))  # Read with the text, before it reached the composer.
        await wait_until(pilot, lambda: app.chat.conversation.id != first)
        await pilot.pause()

        assert composer(app).text == ""  # The new conversation's own (empty) draft.
        assert store.load_draft(first) == "typed fast"
        await app.open_conversation(first)
        assert composer(app).text == "typed fast"


async def test_a_pending_draft_save_never_lands_in_the_conversation_being_opened(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(store, ScriptedProvider(words("an answer")))
    async with answered(app, "first question") as pilot:
        clock = LoopClock()
        first = app.chat.conversation.id
        messages = app.chat.query_one(MessageList)
        shown, showing = Gate(), messages.replace_items

        async def held(widgets: list[Widget]) -> None:  # The new one's items, slow to mount.
            shown.reached.set()
            await shown.opened.wait()
            await showing(widgets)

        monkeypatch.setattr(messages, "replace_items", held)
        type_keys(app, "typed fast")
        app.post_message(key("ctrl+n"))
        await shown.reached.wait()
        await clock.advance(DRAFT_SAVE_DELAY)  # The save the last key asked for falls due.
        shown.opened.set()
        await wait_until(pilot, lambda: app.chat.conversation.id != first)
        await wait_until(pilot, lambda: composer(app).prompts == [])
        await clock.advance(DRAFT_SAVE_DELAY)

        assert composer(app).text == ""
        assert store.load_draft(app.chat.conversation.id) == ""
        assert store.load_draft(first) == "typed fast"


async def test_a_draft_carried_from_a_deleted_conversation_keeps_the_opened_ones_draft(
    store: Store,
) -> None:
    other = stored_conversation(store, ("older question", ResponseState.COMPLETE))
    app = make_app(store, ScriptedProvider(words("ok")))
    async with app.run_test() as pilot:
        store.save_draft(other, "their draft")  # Left there by an earlier run.
        await send(pilot, "doomed")
        await wait_until(pilot, settled(app))
        await type_draft(pilot, app, "keep me")

        await delete_the_open_conversation(pilot, app)
        await pilot.press("enter")  # Open the one left, which has a draft of its own.
        await wait_until(pilot, lambda: composer(app).prompts == ["older question"])

        assert app.chat.conversation.id == other
        assert composer(app).text == "their draft\nkeep me"
        assert store.load_draft(other) == "their draft\nkeep me"


def full_disk(conversation_id: str, text: str) -> None:
    raise sqlite3.OperationalError("database or disk is full")


async def test_a_draft_the_store_cannot_keep_is_told_once_and_never_lost(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(store, ScriptedProvider(words("an answer")))
    async with answered(app, "first question") as pilot:
        clock = LoopClock()
        first = app.chat.conversation.id
        monkeypatch.setattr(store, "save_draft", full_disk)

        await type_draft(pilot, app, "half")
        await clock.advance(DRAFT_SAVE_DELAY)
        type_keys(app, " done")
        await wait_until(pilot, lambda: composer(app).text == "half done")
        await clock.advance(DRAFT_SAVE_DELAY)
        await pilot.press("ctrl+n")  # Storing fails again on the way out.
        await wait_until(pilot, lambda: app.chat.conversation.id != first)

        assert composer(app).text == "half done"  # Not stored: it comes along.
        told = [notice for notice in notices(app) if "draft" in notice]
        assert len(told) == 1 and "database or disk is full" in told[0]

        monkeypatch.undo()  # Room again: the next save keeps it, here.
        type_keys(app, "!")
        await wait_until(pilot, lambda: composer(app).text == "half done!")
        await clock.advance(DRAFT_SAVE_DELAY)
        assert store.load_draft(app.chat.conversation.id) == "half done!"


async def test_quitting_with_a_draft_the_store_cannot_keep_gives_it_back_on_the_terminal(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        monkeypatch.setattr(store, "save_draft", full_disk)
        await type_draft(pilot, app, "words worth keeping")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    printed = capsys.readouterr().err
    assert "database or disk is full" in printed
    assert "words worth keeping" in printed


# 3. Ctrl+E and Up: earlier prompts, with the draft always recoverable


@asynccontextmanager
async def a_draft_after_a_stop(app: ChatApp, provider: ScriptedProvider) -> AsyncIterator[Pilot]:
    """Run `app`: "stopped prompt" sent, its stalled reply stopped, then "my draft" typed."""
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "stopped prompt")
        await provider.last.stalled.wait()
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await type_draft(pilot, app, "my draft")
        yield pilot


async def test_edit_keeps_the_draft_for_ctrl_z_and_down_and_works_again(store: Store) -> None:
    provider = ScriptedProvider([STALL])
    app = make_app(store, provider)
    async with a_draft_after_a_stop(app, provider) as pilot:
        await pilot.press("ctrl+e")
        assert composer(app).text == "stopped prompt"
        await pilot.press("ctrl+z")
        assert composer(app).text == "my draft"  # Undo brings the draft back.

        await pilot.press("ctrl+e")  # Again.
        assert composer(app).text == "stopped prompt"
        await pilot.press("down")
        assert composer(app).text == "my draft"  # So does Down, as in a shell.
        assert composer(app).cursor_location == (0, len("my draft"))

        await pilot.press("ctrl+e", "!", "enter")  # And again: edited and sent, a new version.
        await wait_until(pilot, lambda: len(provider.records) == 2)
        assert prompts(store, app.chat.conversation.id) == ["stopped prompt!"]


async def test_sending_an_edited_prompt_gives_the_draft_back(store: Store) -> None:
    provider = ScriptedProvider([STALL], words("ok"))
    app = make_app(store, provider)
    async with a_draft_after_a_stop(app, provider) as pilot:
        await pilot.press("ctrl+e", "enter")  # Sent again, as it was: a new version of it.
        await wait_until(pilot, settled(app))
        await wait_until(pilot, lambda: len(provider.records) == 2)

        assert prompts(store, app.chat.conversation.id) == ["stopped prompt"]
        assert len(store.load_conversation(app.chat.conversation.id).all_items()) == 4
        assert composer(app).text == "my draft"


async def test_quitting_while_editing_a_prompt_keeps_both_texts(store: Store) -> None:
    conversation_id = stored_conversation(store, ("stopped", ResponseState.INTERRUPTED))
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        await type_draft(pilot, app, "my draft")
        await pilot.press("ctrl+e")
        type_keys(app, " again")
        await wait_until(pilot, lambda: composer(app).text == "stopped again")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    assert store.load_draft(conversation_id) == "stopped again\nmy draft"


async def test_quitting_while_a_prompt_is_in_the_composer_to_edit_keeps_the_draft(
    store: Store,
) -> None:
    conversation_id = stored_conversation(store, ("stopped", ResponseState.INTERRUPTED))
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        await type_draft(pilot, app, "my draft")
        await pilot.press("ctrl+e")
        assert composer(app).text == "stopped"
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    assert store.load_draft(conversation_id) == "my draft"


def three_prompts(store: Store, second: str) -> str:
    """A conversation of three answered prompts, "one", `second` and "three"; its id."""
    return stored_conversation(
        store,
        ("one", ResponseState.COMPLETE),
        (second, ResponseState.COMPLETE),
        ("three", ResponseState.COMPLETE),
    )


async def test_up_on_an_empty_composer_walks_back_through_the_prompts(store: Store) -> None:
    conversation_id = three_prompts(store, "two\nlines")
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        shown: list[str] = []

        async def press(*keys: str) -> None:
            for name in keys:
                await pilot.press(name)
                shown.append(composer(app).text)

        await press("up", "up", "up", "up", "up")
        # The cursor ends each prompt: in "two\nlines" an Up first reaches its first line.
        assert shown == ["three", "two\nlines", "two\nlines", "one", "one"]
        shown.clear()
        await press("down", "down", "down", "down")
        assert shown == ["two\nlines", "three", "", ""]

        await type_draft(pilot, app, "new")
        await press("up")
        assert shown[-1] == "new"  # With a draft, Up is the cursor's.


async def test_up_and_down_walk_past_a_prompt_the_editor_shows_otherwise(store: Store) -> None:
    """A stored prompt with Windows line ends shows with the editor's: the walk goes on."""
    conversation_id = three_prompts(store, "two\r\nlines")
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        shown: list[str] = []
        for name in ["up", "up", "up", "up", "down", "down", "down"]:
            await pilot.press(name)
            shown.append(composer(app).text.replace("\r\n", "\n"))

        assert shown == ["three", "two\nlines", "two\nlines", "one", "two\nlines", "three", ""]


# 4. Text typed while the focus is in the message list goes to the composer


def with_a_result(store: Store) -> tuple[ChatApp, ScriptedProvider]:
    def look() -> str:
        """Look around."""
        return "\n".join(f"line {n}" for n in range(30))

    provider = ScriptedProvider(
        calls(("c1", "look", "{}")), words("Looked."), words("Second answer.")
    )
    return make_app(store, provider, tools=ToolRegistry([Tool(look)])), provider


async def test_text_and_enter_typed_on_a_result_fold_go_to_the_composer(store: Store) -> None:
    app, provider = with_a_result(store)
    async with answered(app, "look") as pilot:
        fold = app.chat.query_one(Collapsible)
        await pilot.click(fold.query_one("CollapsibleTitle"))
        await wait_until(pilot, lambda: app.focused is fold.query_one("CollapsibleTitle"))
        fold.collapsed = True  # The click opened it.
        await pilot.pause()

        type_keys(app, "next question\r")  # In one read.
        await wait_until(pilot, lambda: len(provider.records) == 3)
        await wait_until(pilot, settled(app))

        assert prompts(store, app.chat.conversation.id) == ["look", "next question"]
        assert fold.collapsed  # Enter sent the prompt; it toggled nothing.
        assert app.focused is composer(app) and composer(app).text == ""


async def test_text_pasted_while_the_list_has_focus_goes_to_the_composer(store: Store) -> None:
    provider = ScriptedProvider(words("one"), words("two"))
    app = make_app(store, provider)
    async with answered(app, "first") as pilot:
        await pilot.press("tab")
        assert app.focused is app.chat.query_one(MessageList)

        app.post_message(events.Paste("a pasted\nprompt"))  # Bracketed paste, then Enter,
        type_keys(app, "\r")  # in one read.
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))
        assert prompts(store, app.chat.conversation.id) == ["first", "a pasted\nprompt"]


async def test_text_typed_after_tab_goes_to_the_composer(store: Store) -> None:
    provider = ScriptedProvider(words("one"), words("two"))
    app = make_app(store, provider)
    async with answered(app, "first") as pilot:
        await pilot.press("tab")
        assert app.focused is app.chat.query_one(MessageList)

        type_keys(app, "second\r")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))
        assert prompts(store, app.chat.conversation.id) == ["first", "second"]


async def test_ctrl_n_and_text_in_one_read_while_the_list_has_focus_go_to_the_new_one(
    store: Store,
) -> None:
    app, provider = with_a_result(store)
    async with answered(app, "look") as pilot:
        first = app.chat.conversation.id
        title = app.chat.query_one("CollapsibleTitle")
        await pilot.click(title)
        await wait_until(pilot, lambda: app.focused is title)

        app.post_message(key("ctrl+n"))
        type_keys(app, "fresh\r")
        await wait_until(pilot, lambda: len(provider.records) == 3)
        await wait_until(pilot, settled(app))

        assert app.chat.conversation.id != first
        assert prompts(store, app.chat.conversation.id) == ["fresh"]


async def test_the_command_palette_keeps_its_keys(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("tab")  # The focus in the message list.
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        type_keys(app, "theme")
        await wait_until(pilot, lambda: app.screen.query_one("Input").value == "theme")
        assert composer(app).text == ""
        await pilot.press("escape")


# 5. PageUp, PageDown, Home and End scroll the conversation from the composer


def long_conversation(store: Store) -> str:
    states = [(f"question {n}\n\nwith a body", ResponseState.COMPLETE) for n in range(12)]
    return stored_conversation(store, *states)


async def test_page_keys_home_and_end_in_the_composer_scroll_the_conversation(
    store: Store,
) -> None:
    conversation_id = long_conversation(store)
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        await pilot.pause()
        messages = app.chat.query_one(MessageList)
        bottom = messages.max_scroll_y
        assert bottom > 0 and messages.scroll_y == bottom
        assert app.focused is composer(app)

        await pilot.press("pageup")
        assert messages.scroll_y < bottom
        after_page_up = messages.scroll_y
        await pilot.press("pagedown")
        assert messages.scroll_y > after_page_up
        await pilot.press("home")
        assert messages.scroll_y == 0
        await pilot.press("end")
        await pilot.pause()
        assert messages.scroll_y == bottom
        assert app.focused is composer(app)


async def test_home_and_end_stay_in_a_draft_that_needs_them(store: Store) -> None:
    conversation_id = long_conversation(store)
    app = make_app(store, ScriptedProvider())
    async with opened(app, conversation_id) as pilot:
        await pilot.pause()
        messages = app.chat.query_one(MessageList)
        bottom = messages.scroll_y

        await type_draft(pilot, app, "one line")
        await pilot.press("home")  # Moves the cursor: the draft's.
        assert composer(app).cursor_location == (0, 0) and messages.scroll_y == bottom
        await pilot.press("home")  # Moves nothing there: the conversation's.
        assert messages.scroll_y == 0
        await pilot.press("end")
        assert composer(app).cursor_location == (0, 8)
        await pilot.press("end")
        await pilot.pause()
        assert messages.scroll_y == bottom

        await pilot.press("ctrl+j")
        type_keys(app, "two")
        await wait_until(pilot, lambda: composer(app).text == "one line\ntwo")
        bottom = messages.max_scroll_y  # The list is a line shorter: the composer grew.
        await pilot.press("home", "home")
        assert composer(app).cursor_location == (1, 0) and messages.scroll_y == bottom
        await pilot.press("pageup")  # The draft fits: PageUp is still the conversation's.
        assert messages.scroll_y < bottom


async def test_sending_while_scrolled_up_shows_the_prompt_and_follows_the_reply(
    store: Store,
) -> None:
    conversation_id = long_conversation(store)
    gate = Gate()
    provider = ScriptedProvider([TextDelta("first words "), gate, *words("and many more " * 40)])
    app = make_app(store, provider)
    async with opened(app, conversation_id) as pilot:
        await pilot.pause()
        messages = app.chat.query_one(MessageList)
        messages.scroll_home(animate=False)  # As the mouse wheel scrolls.
        await pilot.pause()
        assert messages.scroll_y == 0

        await send(pilot, "new question")
        await gate.reached.wait()
        await pilot.pause()
        assert messages.scroll_y == messages.max_scroll_y > 0  # The prompt is in sight.
        gate.opened.set()
        await wait_until(pilot, settled(app))
        await pilot.pause()
        assert messages.scroll_y == messages.max_scroll_y  # Followed to the reply's end.
        assert not app.chat.query_one(MoreBelow).display


async def test_scrolled_up_during_a_stream_a_sign_says_more_is_below_until_end(
    store: Store,
) -> None:
    conversation_id = long_conversation(store)
    gates = [Gate(), Gate()]
    first, more = words("a " * 200, end=None), words("b " * 200, end=None)
    provider = ScriptedProvider([*first, gates[0], *more, gates[1], StreamEnd("stop")])
    app = make_app(store, provider)
    async with opened(app, conversation_id) as pilot:
        messages = app.chat.query_one(MessageList)
        sign = app.chat.query_one(MoreBelow)
        shown: list[bool] = []
        app.chat.watch(messages, "more_below", lambda value: shown.append(value), init=False)
        await send(pilot, "go")
        await gates[0].reached.wait()
        await pilot.pause()
        assert shown == [] and not sign.display  # Following: nothing below.

        await pilot.press("pageup")
        await pilot.pause()
        assert sign.display and "more below (End)" in screen_text(app)
        gates[0].opened.set()
        await gates[1].reached.wait()
        await pilot.pause()
        assert sign.display and messages.scroll_y < messages.max_scroll_y  # Left where it was.

        await pilot.press("end")
        await pilot.pause()
        assert not sign.display and messages.scroll_y == messages.max_scroll_y
        gates[1].opened.set()
        await wait_until(pilot, settled(app))
        await pilot.pause()
        assert not sign.display and messages.scroll_y == messages.max_scroll_y  # Following.
        assert shown == [True, False]


async def test_end_at_the_end_of_a_multi_line_draft_follows_the_reply_as_the_sign_says(
    store: Store,
) -> None:
    conversation_id = long_conversation(store)
    gate = Gate()
    provider = ScriptedProvider([*words("a " * 200, end=None), gate, StreamEnd("stop")])
    app = make_app(store, provider)
    async with opened(app, conversation_id) as pilot:
        messages = app.chat.query_one(MessageList)
        sign = app.chat.query_one(MoreBelow)
        await send(pilot, "go")
        await gate.reached.wait()
        type_keys(app, "the next question")
        await pilot.press("ctrl+j")
        type_keys(app, "in two lines")
        await wait_until(pilot, lambda: composer(app).text.endswith("in two lines"))
        await pilot.press("pageup")
        await pilot.pause()
        assert sign.display and "(End)" in screen_text(app)

        await pilot.press("end")  # The cursor is at the draft's end: End has nothing to do there.
        await pilot.pause()
        assert not sign.display and messages.scroll_y == messages.max_scroll_y
        assert composer(app).text == "the next question\nin two lines"
        gate.opened.set()
        await wait_until(pilot, settled(app))


async def test_no_sign_while_the_view_follows_a_reply_shorter_than_the_screen(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("a short reply", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        messages = app.chat.query_one(MessageList)
        shown: list[bool] = []
        app.chat.watch(messages, "more_below", lambda value: shown.append(value), init=False)
        await send(pilot, "hi")
        await provider.last.stalled.wait()
        await pilot.pause()
        await pilot.pause()

        assert shown == [] and not app.chat.query_one(MoreBelow).display
        await pilot.press("escape")
        await wait_until(pilot, settled(app))


def test_the_sign_that_more_is_below(snap_compare, store: Store) -> None:
    conversation_id = long_conversation(store)
    gate = Gate()
    provider = ScriptedProvider([*words("A reply that goes on " * 30, end=None), gate, STALL])
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await app.open_conversation(conversation_id)
        await send(pilot, "One more question")
        await gate.reached.wait()
        # Folded again from a layout of the whole history, its replies parsed: the spacer
        # as tall as they are, whenever their parsing ended (see `fold.Settles`).
        messages = app.chat.query_one(MessageList)
        messages.unfold()
        await wait_until(pilot, lambda: bool(messages.folded))
        await pilot.press("pageup")
        await wait_until(pilot, lambda: app.chat.query_one(MoreBelow).display)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# 6. Ctrl+N starts the status bar afresh


async def test_ctrl_n_leaves_no_figures_of_the_old_conversation(store: Store) -> None:
    provider = ScriptedProvider(words("an answer", usage=(12, 3)), [STALL])
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        status = app.chat.query_one(StatusBar)
        await send(pilot, "first")
        await wait_until(pilot, settled(app))
        assert " tok" in str(status.render())
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: status.response is None)
        line = str(status.render())
        assert " tok" not in line and "TTFT" not in line and "idle" in line

        await send(pilot, "second")
        await provider.last.stalled.wait()
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert "stopped in" in str(status.render())
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: "stopped" not in str(status.render()))
        assert status.state == "idle" and status.stop_ms is None
