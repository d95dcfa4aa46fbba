"""Folding the history above the view: nothing on screen changes, and it comes back."""

from __future__ import annotations

import re

import pytest
from textual.pilot import Pilot
from textual.widgets import Static
from textual.widgets.markdown import MarkdownBlock

from chatui.app import ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import TextDelta
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.fold import Fold
from chatui.widgets.message_list import MessageList
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import STALL, ScriptedProvider, words

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
    """Open a conversation at its end."""
    await app.open_conversation(conversation_id)
    await pilot.pause()
    messages = app.screen.query_one(MessageList)
    messages.scroll_end(animate=False, immediate=True)
    await pilot.pause()
    return messages


def never_fold_by_itself(patch: pytest.MonkeyPatch) -> None:
    patch.setattr(MessageList, "_after_layout", lambda self, screen: None)


@pytest.fixture
def no_auto_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing folds unless the test asks: the reference screens."""
    never_fold_by_itself(monkeypatch)


async def plain_screen(store: Store, conversation_id: str, size: tuple[int, int]) -> str:
    """The screen at the end of a conversation, never folded."""
    with pytest.MonkeyPatch.context() as patch:
        never_fold_by_itself(patch)
        app = make_app(store, ScriptedProvider())
        async with app.run_test(size=size) as pilot:
            messages = await open_long(app, pilot, conversation_id)
            assert messages.folded == []
            return screenshot(app)


async def test_folding_hides_the_items_above_the_view_and_nothing_on_screen_changes(
    store: Store, no_auto_fold: None
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
        assert len(messages.folded) >= 12  # What went a view or more out of sight folds.

        messages.scroll_home(animate=False, immediate=True)
        await pilot.pause()

        assert messages.folded == []
        assert all(item.display for item in messages.items)
        assert app.export_screenshot() == top_before


async def test_after_a_resize_the_screen_is_as_if_nothing_had_folded(store: Store) -> None:
    conversation_id = seed(store, 10)
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, conversation_id)
        messages.fold_above_view()
        assert messages.folded

        await pilot.resize_terminal(60, 24)
        messages.scroll_end(animate=False, immediate=True)
        await pilot.pause()

        assert messages.folded  # Unfolded for the new widths, then folded again.
        assert screenshot(app) == await plain_screen(store, conversation_id, (60, 24))


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

        assert len(messages.folded) >= 12
        assert messages.items[-1] is app.chat.query(AssistantMessage).last()
        assert messages.items[-1].display and messages.items[-2].display

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert len(messages.folded) >= 12  # Still folded until the user scrolls up.
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


LONG_REPLY = "\n\n".join(f"Paragraph {n}: some prose that fills most of a line." for n in range(40))


def seed_long_reply(store: Store) -> str:
    conversation = store.create_conversation("one long reply")
    store.save_item(conversation.id, UserPrompt("Tell me everything."))
    response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    response.append_text(LONG_REPLY)
    store.save_item(conversation.id, response)
    return conversation.id


def screenshot(app: ChatApp) -> str:
    """The screen as SVG, its segments joined and without the export's id (a hash of them)."""
    return re.sub(r"terminal-\d+", "terminal", app.export_screenshot(simplify=True))


def shown_blocks(view: AssistantMessage) -> int:
    return sum(1 for block in view.query(MarkdownBlock) if block.display)


async def test_a_long_reply_folds_its_own_blocks_above_the_view(
    store: Store, no_auto_fold: None
) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test(size=(80, 24)) as pilot:
        messages = await open_long(app, pilot, seed_long_reply(store))
        (view,) = app.screen.query(AssistantMessage)
        assert shown_blocks(view) == 40
        screen_before = screenshot(app)
        scroll, height = messages.scroll_y, messages.virtual_size.height

        messages.fold_above_view()
        await pilot.pause()

        # The prompt is folded, and all but the blocks in (or just above) the view.
        assert messages.folded == messages.items[:1]
        assert shown_blocks(view) <= 10
        assert (messages.scroll_y, messages.virtual_size.height) == (scroll, height)
        assert screenshot(app) == screen_before

        messages.scroll_relative(y=-1, animate=False, immediate=True)
        await pilot.pause()
        assert shown_blocks(view) == 40 and messages.folded == []
        messages.scroll_relative(y=1, animate=False, immediate=True)
        await pilot.pause()
        assert screenshot(app) == screen_before


async def test_a_streaming_reply_folds_its_early_blocks_as_it_grows(store: Store) -> None:
    paragraphs = [
        TextDelta(f"Paragraph {n}: some prose that fills most of a line.\n\n") for n in range(60)
    ]
    provider = ScriptedProvider([*paragraphs, STALL])
    app = make_app(store, provider)
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "go on")
        await provider.started.wait()
        await provider.last.stalled.wait()
        view = app.chat.query(AssistantMessage).last()
        await wait_until(pilot, lambda: len(view.query(MarkdownBlock)) == 60, timeout=5)
        await pilot.pause()

        # Of 60 blocks, those in the view and in the view's height above it.
        assert shown_blocks(view) <= 20
        folded_screen = screenshot(app)
        messages = app.screen.query_one(MessageList)
        app.screen.screen_layout_refresh_signal.unsubscribe(messages)
        messages.unfold()
        await pilot.pause()
        assert shown_blocks(view) == 60
        assert screenshot(app) == folded_screen

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert "Paragraph 59" in view.response.text


def test_a_child_not_laid_out_yet_is_never_folded() -> None:
    # Textual gives a widget it has not placed an empty region; grown by its margin,
    # that region is not empty, and once passed for a place above the view.
    fold = Fold()
    child = Static("mounted after the last layout")
    child.styles.margin = (1, 0, 0, 8)
    assert fold.fold([child], top=100) == 0
    assert child.display and fold.folded == []


class Arriving(Static):
    """An item whose content comes after it is laid out (a stored reply's Markdown)."""

    arrived = False

    def settled(self) -> bool:
        return self.arrived


async def test_an_item_whose_content_is_still_arriving_is_never_folded() -> None:
    # Folded as it is laid out before its content came, it would keep that height in
    # the spacer (hidden, it is not laid out again): the list too short, Page Up wrong.
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll

    items = [Arriving(f"item {n}") for n in range(3)]

    class Items(App[None]):
        def compose(self) -> ComposeResult:
            yield VerticalScroll(*items)

    async with Items().run_test() as pilot:
        await pilot.pause()
        fold = Fold()
        assert all(item.virtual_region for item in items)  # Laid out, all above `top`.
        assert fold.fold(items, top=100) == 0
        assert all(item.display for item in items)
        items[0].arrived = True
        assert fold.fold(items, top=100) == 1  # The first; the second stops the rest.
        assert fold.folded == [items[0]] and items[1].display and items[2].display


@pytest.mark.parametrize("change", ["last block re-parsed away", "composer shrinks"])
async def test_what_folds_cannot_come_back_into_sight_before_the_next_layout(
    store: Store, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The view's top moves up when the reply's last block comes out shorter (here:
    # gone, the most a re-parse can take) or when the view grows taller (the composer
    # shrinks). A resize unfolds, but a frame later; here it does not, so a fold that
    # came into sight would stay blank.
    monkeypatch.setattr(MessageList, "on_resize", lambda self, event: None)
    paragraphs = [
        TextDelta(f"Paragraph {n}: prose that fills most of a line.\n\n") for n in range(40)
    ]
    if change == "composer shrinks":
        last = "A short last paragraph."  # Little to re-parse: the view's growth must count.
    else:
        last = "A last paragraph, long enough to wrap over a dozen lines or so. " * 10
    provider = ScriptedProvider([*paragraphs, TextDelta(last), STALL])
    app = make_app(store, provider)
    async with app.run_test(size=(60, 24)) as pilot:
        composer = app.screen.query_one("#composer")
        await send(pilot, "go on")
        await provider.last.stalled.wait()
        view = app.chat.query(AssistantMessage).last()
        await wait_until(pilot, lambda: len(view.query(MarkdownBlock)) == 41, timeout=5)
        if change == "composer shrinks":
            composer.text = "\n".join("line" for _ in range(8))  # Taller: the view shrinks.
        # Something is folded (the precondition: awaited, the machine may be slow).
        await wait_until(pilot, lambda: shown_blocks(view) < 41, timeout=5)

        if change == "composer shrinks":
            composer.text = ""
        else:
            await view.query(MarkdownBlock).last().remove()
        await pilot.pause()
        await pilot.pause()
        changed = screenshot(app)

        app.screen.screen_layout_refresh_signal.unsubscribe(app.screen.query_one(MessageList))
        app.screen.query_one(MessageList).unfold()
        await pilot.pause()
        assert screenshot(app) == changed  # No blank where folded content belongs.

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
