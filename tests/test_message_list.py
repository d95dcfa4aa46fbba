"""Folding the history above the view: nothing on screen changes, and it comes back."""

from __future__ import annotations

from apphelpers import make_app, send, settled, wait_until
from scripted import STALL, ScriptedProvider, words
from textual.pilot import Pilot

from chatui.app import ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.message_list import MessageList

REPLY = (
    "## Answer {n}\n\nSome prose that wraps over a line or two on a narrow screen.\n\n"
    "- one\n- two\n"
)


def seed(store: Store, pairs: int) -> str:
    conversation = store.create_conversation("long")
    for n in range(pairs):
        store.save_item(conversation.id, UserPrompt(f"Question {n}?"))
        response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
        response.append_text(REPLY.format(n=n))
        store.save_item(conversation.id, response)
    return conversation.id


async def open_long(app: ChatApp, pilot: Pilot, conversation_id: str) -> MessageList:
    await app.open_conversation(conversation_id)
    await pilot.pause()
    messages = app.screen.query_one(MessageList)
    messages.scroll_end(animate=False, immediate=True)
    await pilot.pause()
    return messages


async def test_folding_hides_the_items_above_the_view_and_nothing_on_screen_changes(
    store: Store,
) -> None:
    conversation_id = seed(store, 10)
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, conversation_id)
        screen_before = app.export_screenshot()
        scroll, height = messages.scroll_y, messages.virtual_size.height

        folded = messages.fold_above_view()
        await pilot.pause()

        # 20 items, of which only the last reply (and part of its prompt) fit on screen.
        assert folded >= 17
        assert messages.folded == messages.items[:folded]
        assert not any(item.display for item in messages.folded)
        assert messages.items[folded].display
        assert (messages.scroll_y, messages.virtual_size.height) == (scroll, height)
        assert app.export_screenshot() == screen_before
        assert messages.fold_above_view() == 0  # Nothing more is above the view.


async def test_scrolling_up_to_the_folded_items_shows_them_as_before(store: Store) -> None:
    conversation_id = seed(store, 10)
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, conversation_id)
        messages.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        top_before = app.export_screenshot()
        messages.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert messages.fold_above_view() > 0

        messages.scroll_home(animate=False, immediate=True)
        await pilot.pause()

        assert messages.folded == []
        assert all(item.display for item in messages.items)
        assert app.export_screenshot() == top_before


async def test_a_resize_shows_the_folded_items_again(store: Store) -> None:
    conversation_id = seed(store, 10)
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, conversation_id)
        assert messages.fold_above_view() > 0

        await pilot.resize_terminal(60, 24)
        await pilot.pause()

        assert messages.folded == []
        assert all(item.display for item in messages.items)


async def test_sending_a_prompt_folds_the_history_and_the_reply_streams_below_it(
    store: Store,
) -> None:
    conversation_id = seed(store, 10)
    provider = ScriptedProvider([*words("a reply that goes on", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, conversation_id)
        await send(pilot, "and now?")
        await provider.started.wait()
        await wait_until(pilot, lambda: app.chat.query(AssistantMessage).last().written == 5)

        assert len(messages.folded) >= 17
        assert messages.items[-1] is app.chat.query(AssistantMessage).last()
        assert messages.items[-1].display and messages.items[-2].display

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert len(messages.folded) >= 17  # Still folded until the user scrolls up.
        messages.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        assert messages.folded == []


async def test_the_spacer_stays_before_every_item_when_conversations_change(
    store: Store,
) -> None:
    first, second = seed(store, 10), seed(store, 3)
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        for conversation_id, items in ((first, 20), (second, 6), (first, 20)):
            messages = await open_long(app, pilot, conversation_id)
            assert len(messages.items) == items
            assert messages.children[0] not in messages.items
