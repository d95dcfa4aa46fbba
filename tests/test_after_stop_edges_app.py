"""Continue, Retry, Edit and versions at their edges: keys read together, a stop wrapping up,
an edit while another turn runs, a reply with nothing to go on from, long conversations.

Each drives the app with Pilot on the scripted provider; keys "in one read"
go through the terminal's parser (`InputPump`), as a terminal delivers them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from textual import events
from textual.pilot import Pilot

from chatui._textual.input import InputPump
from chatui.app import ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import StreamEnd
from chatui.store import Store
from chatui.turn_kinds import Continue, Retry
from chatui.widgets.chat_message import AssistantMessage, ContextDivider
from chatui.widgets.composer import Composer
from chatui.widgets.versions import EditBanner
from tests.support.app import (
    conversation_rows,
    esc_until_idle,
    idle,
    make_app,
    screen_text,
    send,
    wait_until,
)
from tests.support.scripted import STALL, Gate, ScriptedProvider, words

KITTY_ESCAPE = "\x1b[27u"  # Esc as a terminal with the kitty protocol sends it: no wait.
CTRL_R, CTRL_G = "\x12", "\x07"


def replies(app: ChatApp) -> list[AssistantMessage]:
    return list(app.chat.query(AssistantMessage))


def composer(app: ChatApp) -> Composer:
    return app.chat.query_one(Composer)


def banner(app: ChatApp) -> str:
    shown = app.chat.query_one(EditBanner)
    return str(shown.render()) if shown.display else ""


def stored_texts(store: Store, conversation_id: str) -> list[str]:
    items = store.load_conversation(conversation_id).all_items()
    return [item.text for item in items if isinstance(item, ModelResponse)]


def feed(app: ChatApp, keys: str) -> None:
    """`keys` as one read from the terminal."""
    InputPump(app._driver.send_message).feed(keys, read_at=time.monotonic())


@asynccontextmanager
async def mid_reply(
    store: Store, provider: ScriptedProvider, prompt: str
) -> AsyncIterator[tuple[ChatApp, Pilot]]:
    """Run the app on `provider`: `prompt` sent, and its reply stalled."""
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, prompt)
        await provider.last.stalled.wait()
        yield app, pilot


@asynccontextmanager
async def showing(app: ChatApp, conversation_id: str) -> AsyncIterator[Pilot]:
    """Run `app` with the stored conversation `conversation_id` open and drawn."""
    async with app.run_test() as pilot:
        await app.open_conversation(conversation_id)
        await pilot.pause()
        yield pilot


async def two_exchanges(pilot: Pilot, app: ChatApp, provider: ScriptedProvider) -> None:
    """Send "first", then "second" once it is answered; wait until both are."""
    await send(pilot, "first")
    await wait_until(pilot, idle(app))
    await send(pilot, "second")
    await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())


# Keys read together with Esc


async def test_ctrl_r_and_esc_in_one_read_stop_the_retry_as_it_starts(store: Store) -> None:
    provider = ScriptedProvider(words("first answer"), words("second answer"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "question")
        await wait_until(pilot, idle(app))
        before = app.chat.turn

        feed(app, CTRL_R + KITTY_ESCAPE)
        await wait_until(pilot, lambda: app.chat.turn is not before and idle(app)())

        assert isinstance(app.chat.turn.ask, Retry)
        assert app.chat.turn.token.requested  # The Esc read with it stopped it.
        assert "second answer" not in stored_texts(store, app.chat.conversation.id)
        assert [view.response.text for view in replies(app)] == ["first answer"]


async def test_ctrl_g_and_esc_in_one_read_stop_the_continue_as_it_starts(store: Store) -> None:
    provider = ScriptedProvider([*words("Soda bread", end=None), STALL], words(" is quick."))
    async with mid_reply(store, provider, "bread?") as (app, pilot):
        await esc_until_idle(pilot, app)
        before = app.chat.turn

        feed(app, CTRL_G + KITTY_ESCAPE)
        await wait_until(pilot, lambda: app.chat.turn is not before and idle(app)())

        assert isinstance(app.chat.turn.ask, Continue)
        assert app.chat.turn.token.requested
        assert stored_texts(store, app.chat.conversation.id) == ["Soda bread"]
        (view,) = replies(app)
        assert view.response.text == "Soda bread"


async def test_a_continue_stopped_before_its_request_leaves_the_reply_as_it_was(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("Soda bread", end=None), STALL], words(" is quick."))
    async with mid_reply(store, provider, "bread?") as (app, pilot):
        await esc_until_idle(pilot, app)
        (stopped,) = replies(app)
        marker = str(stopped.query_one(".marker").render())

        await app.chat.action_continue_reply()
        app.chat.action_stop()  # Before the turn's task has even run.
        await wait_until(pilot, idle(app))

        assert len(provider.records) == 1
        (view,) = replies(app)  # No second, empty reply under it.
        assert view.response.text == "Soda bread"
        assert str(view.query_one(".marker").render()) == marker


# Choices made while a stop wraps up


async def test_esc_and_ctrl_g_in_one_read_continue_once_the_stop_is_stored(store: Store) -> None:
    provider = ScriptedProvider([*words("Soda bread", end=None), STALL], words(" is quick."))
    async with mid_reply(store, provider, "bread?") as (app, pilot):
        feed(app, KITTY_ESCAPE + CTRL_G)  # Stop, then go on: the Ctrl+G comes as it wraps up.
        await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())

        assert provider.records[1].request.continuing
        (view,) = replies(app)
        assert view.response.text == "Soda bread is quick."
        assert stored_texts(store, app.chat.conversation.id) == ["Soda bread is quick."]


async def test_esc_ctrl_g_esc_in_one_read_stop_the_continue_as_it_starts(store: Store) -> None:
    provider = ScriptedProvider([*words("Soda bread", end=None), STALL], words(" is quick."))
    async with mid_reply(store, provider, "bread?") as (app, pilot):
        first = app.chat.turn

        feed(app, KITTY_ESCAPE + CTRL_G + KITTY_ESCAPE)  # Stop, go on, and stop that too.
        await wait_until(pilot, lambda: app.chat.turn is not first and idle(app)())

        assert isinstance(app.chat.turn.ask, Continue) and app.chat.turn.token.requested
        assert stored_texts(store, app.chat.conversation.id) == ["Soda bread"]


async def test_ctrl_r_while_a_stop_wraps_up_retries_after_it(store: Store) -> None:
    provider = ScriptedProvider([*words("first", end=None), STALL], words("second answer"))
    async with mid_reply(store, provider, "question") as (app, pilot):
        show = app.chat._show_outcome
        pressed: list[bool | None] = []

        async def ctrl_r_during_wrap_up(turn, outcome) -> None:  # type: ignore[no-untyped-def]
            if not pressed:
                pressed.append(app.chat.check_action("retry", ()))
                await pilot.press("ctrl+r")
            await show(turn, outcome)

        app.chat._show_outcome = ctrl_r_during_wrap_up  # type: ignore[method-assign]
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())

        assert pressed == [True]  # Offered: it acts, once the stop is on screen and stored.
        (view,) = replies(app)
        assert view.response.text == "second answer"
        assert str(view.border_subtitle) == "‹ 2/2 ›"


async def test_a_choice_made_while_a_stop_wraps_up_stays_with_its_conversation(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("first", end=None), STALL], words("never"))
    async with mid_reply(store, provider, "question") as (app, pilot):
        talked = app.chat.conversation.id
        feed(app, KITTY_ESCAPE + CTRL_G)
        await pilot.press("ctrl+n")  # Leaves the conversation before its Ctrl+G could act.
        await wait_until(pilot, lambda: app.chat.conversation.id != talked and not app.chat.busy)
        await pilot.pause()

        assert not app.chat.busy
        assert len(provider.records) == 1
        assert stored_texts(store, talked) == ["first"]


# An edit, and a turn that the edit did not start


async def test_a_retry_started_while_editing_ends_the_edit_and_keeps_its_text(
    store: Store,
) -> None:
    gate = Gate()
    provider = ScriptedProvider(
        words("first answer"), [*words("second", end=None), gate, StreamEnd("stop")]
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "question")
        await wait_until(pilot, idle(app))
        await pilot.press("ctrl+e", "!")
        assert banner(app) != ""

        await pilot.press("ctrl+r")
        await gate.reached.wait()

        # Enter now queues the text as a message of its own: no banner may say otherwise.
        assert banner(app) == "" and app.chat.editing is None
        assert composer(app).text == "question!"
        gate.opened.set()
        await wait_until(pilot, idle(app))
        assert banner(app) == "" and app.chat.editing is None


async def test_keys_read_while_an_edit_branches_off_leave_both_conversations_alone(
    store: Store,
) -> None:
    provider = ScriptedProvider(
        words("one"), words("two"), words("two again"), words("branched reply"), words("never")
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await two_exchanges(pilot, app, provider)
        before = app.chat.turn
        await pilot.press("ctrl+r")  # The last exchange has two versions: Alt+Left flips it.
        await wait_until(pilot, lambda: app.chat.turn is not before and idle(app)())
        original = app.chat.conversation
        await pilot.press("ctrl+e", "ctrl+e", "!")  # An edit of "first": it branches off.
        rows = conversation_rows(store, original.id)
        fork = app.chat.session.fork
        during: list[bool | None] = []

        async def keys_while_branching(conversation, prompt):  # type: ignore[no-untyped-def]
            during.append(app.chat.check_action("version", (-1,)))
            for key in ("alt+left", "ctrl+n"):  # Read while the branch is being made.
                app.post_message(events.Key(key, None))
            taken = asyncio.Event()
            app.call_later(taken.set)  # Once the app has taken both keys.
            await taken.wait()
            return await fork(conversation, prompt)

        app.chat.session.fork = keys_while_branching  # type: ignore[method-assign]
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(provider.records) == 4 and idle(app)())

        assert during == [None]
        branched = app.chat.conversation
        assert branched.branched_from is not None
        assert branched.branched_from.conversation_id == original.id
        assert [view.response.text for view in replies(app)] == ["branched reply"]
        assert conversation_rows(store, original.id) == rows  # Not flipped, not written.
        assert len(store.list_conversations()) == 2  # No new one was opened meanwhile.


# Continue needs text to go on from


async def test_continue_is_not_offered_for_a_reply_stopped_before_its_first_token(
    store: Store,
) -> None:
    provider = ScriptedProvider([STALL], words("a reply"))
    async with mid_reply(store, provider, "question") as (app, pilot):
        await esc_until_idle(pilot, app)

        assert app.chat.check_action("continue_reply", ()) is None
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Continue the reply" not in titles and "Retry the reply" in titles
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert len(provider.records) == 1 and not app.chat.busy


# Long conversations: versions of an exchange that is not shown


def long_conversation(store: Store, exchanges: int, *, trailing_prompt: bool) -> str:
    """A stored conversation whose first exchange has two replies (the second shown),
    then `exchanges` more; `trailing_prompt`: a last prompt with no reply."""
    conversation = store.create_conversation("long")
    first = UserPrompt("first")
    store.save_item(conversation.id, first, parent=None)
    last = ""
    for text in ("one", "two"):
        reply = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
        reply.append_text(text)
        store.save_item(conversation.id, reply, parent=first.id)
        last = reply.id
    for n in range(exchanges):
        prompt = UserPrompt(f"q{n}")
        store.save_item(conversation.id, prompt, parent=last)
        reply = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
        reply.append_text(f"a{n}")
        store.save_item(conversation.id, reply, parent=prompt.id)
        last = reply.id
    if trailing_prompt:
        store.save_item(conversation.id, UserPrompt("unanswered"), parent=last)
    store.release_conversation(conversation.id)
    return conversation.id


async def test_a_reply_whose_prompt_is_folded_away_still_shows_its_version(
    store: Store,
) -> None:
    conversation_id = long_conversation(store, 19, trailing_prompt=True)  # 41 items: 1 hidden.
    app = make_app(store, ScriptedProvider())
    async with showing(app, conversation_id):
        assert app.chat.hidden_items == 1

        first = replies(app)[0]
        assert first.response.text == "two"
        assert str(first.border_subtitle) == "‹ 2/2 ›"


async def test_the_flip_keys_leave_an_exchange_that_is_not_shown_alone(store: Store) -> None:
    conversation_id = long_conversation(store, 20, trailing_prompt=False)  # 42 items: 2 hidden.
    app = make_app(store, ScriptedProvider())
    async with showing(app, conversation_id) as pilot:
        assert app.chat.hidden_items == 2
        shown = len(app.chat.conversation.items)

        assert app.chat.check_action("version", (-1,)) is None
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Previous version" not in titles
        await pilot.press("alt+left")
        await pilot.pause()
        assert len(app.chat.conversation.items) == shown  # Nothing shown went away.

        await pilot.press("ctrl+u")  # All of it on screen: now the first exchange can flip.
        await wait_until(pilot, lambda: app.chat.hidden_items == 0)
        assert app.chat.check_action("version", (-1,)) is True


# The divider where the model's view starts


async def test_editing_the_prompt_where_the_view_starts_leaves_no_divider_above_the_new_one(
    store: Store,
) -> None:
    conversation = store.create_conversation("trimmed")
    old = UserPrompt("old")
    store.save_item(conversation.id, old)
    reply = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    reply.append_text("old reply")
    store.save_item(conversation.id, reply)
    last = UserPrompt("last")
    store.save_item(conversation.id, last)
    answer = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    answer.append_text("last reply")
    store.save_item(conversation.id, answer)
    store.set_view_start(conversation.id, last.id)
    store.release_conversation(conversation.id)
    provider = ScriptedProvider(words("new reply"))  # No known window: it sees everything.
    app = make_app(store, provider)
    async with showing(app, conversation.id) as pilot:
        assert len(app.chat.query(ContextDivider)) == 1

        await pilot.press("ctrl+e", "!")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(provider.records) == 1 and idle(app)())

        sent = [str(message.content) for message in provider.records[0].request.messages]
        assert "old" in sent  # The model's view starts at the beginning again...
        assert not app.chat.query(ContextDivider)  # ...and no divider says otherwise.


# Hostile and awkward text


async def test_a_queued_message_with_tabs_keeps_its_cross_on_screen(store: Store) -> None:
    provider = ScriptedProvider([*words("streaming", end=None), STALL])
    async with mid_reply(store, provider, "one") as (app, pilot):
        await send(pilot, "\t".join("abcdefghijklm"))
        await wait_until(pilot, lambda: len(store.load_queue(app.chat.conversation.id)) == 1)
        await pilot.pause()

        (line,) = [line for line in screen_text(app).splitlines() if "◷ Queued:" in line]
        assert line.rstrip().endswith("✕")
        await esc_until_idle(pilot, app)


async def test_a_branch_from_a_conversation_that_is_gone_is_told_in_a_sentence(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("one"), words("two"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await two_exchanges(pilot, app, provider)
        gone = app.chat.conversation.id
        with sqlite3.connect(store.path) as db:  # Deleted behind this chatui's back.
            db.execute("DELETE FROM items WHERE conversation_id = ?", (gone,))
            db.execute("DELETE FROM conversations WHERE id = ?", (gone,))

        await pilot.press("ctrl+e", "ctrl+e", "!")
        await pilot.press("enter")
        await wait_until(pilot, lambda: composer(app).text == "first!")

        assert len(provider.records) == 2  # Nothing was sent.
        (notice,) = [notice.message for notice in app._notifications]
        assert gone not in notice  # A sentence, not the missing key's repr.
