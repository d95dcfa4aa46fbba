"""The context window on screen: how full it is, where the model's view starts, a refusal.

The provider is the scripted one with a small window (`WindowedProvider`,
a token per 4 characters), so each trim happens at a known exchange.
"""

from __future__ import annotations

import itertools

from chatui.history import TRIMMED_NOTE
from chatui.messages import UserPrompt
from chatui.providers.base import ContextOverflow
from chatui.store import Store
from chatui.widgets.chat_message import ContextDivider, ErrorNotice, UserMessage
from chatui.widgets.composer import Composer
from chatui.widgets.status_bar import StatusBar
from tests.support.app import make_app, screen_text, send, settled, wait_until
from tests.support.clocks import FakeClock
from tests.support.scripted import RAISE, WindowedProvider, words

SIZE = (90, 30)
QUESTION = "Question {n}: " + "tell me more " * 8


def status(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one(StatusBar).render())


def divider_above(app) -> str | None:  # type: ignore[no-untyped-def]
    """The id of the prompt just below the divider, if there is one."""
    items = app.chat._messages.items
    for above, below in itertools.pairwise(items):
        if isinstance(above, ContextDivider):
            assert isinstance(below, UserMessage)
            return below.item_id
    return None


async def talk(pilot, provider: WindowedProvider, exchanges: int, first: int = 0) -> None:  # type: ignore[no-untyped-def]
    for n in range(first, first + exchanges):
        provider.play(words(f"Answer {n}: " + "and so on " * 8))
        await send(pilot, QUESTION.format(n=n))
        await wait_until(pilot, settled(pilot.app))


async def test_the_status_bar_shows_how_full_the_context_is(store: Store) -> None:
    provider = WindowedProvider(window=400, reply=50)
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        assert " ctx " not in status(app)  # Nothing measured yet.
        await talk(pilot, provider, 1)
        sent = provider.counted(provider.records[-1].request.messages)
        received = app.last_outcome.responses[-1].received
        assert f"ctx {sent + received}/400" in status(app)

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: " ctx " not in status(app))


async def test_a_divider_marks_where_the_models_view_starts_and_moves_with_it(
    store: Store,
) -> None:
    provider = WindowedProvider(window=400, reply=50)
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        await talk(pilot, provider, 3)
        assert app.chat.conversation.view_start is None and divider_above(app) is None
        starts = []
        for n in range(3, 9):
            await talk(pilot, provider, 1, first=n)
            start = app.chat.conversation.view_start
            if start not in starts:
                starts.append(start)
            assert divider_above(app) == start
            assert len(app.chat._messages.query(ContextDivider)) == (start is not None)
        assert len([s for s in starts if s]) >= 2  # It moved, and the divider with it.
        first_sent = provider.records[-1].request.messages[0]
        assert first_sent.content.startswith(TRIMMED_NOTE)
        conversation_id = app.chat.conversation.id

    reopened = make_app(store, WindowedProvider(window=400, reply=50))
    async with reopened.run_test(size=SIZE) as pilot:
        await reopened.open_conversation(conversation_id)
        await pilot.pause()
        assert divider_above(reopened) == store.load_conversation(conversation_id).view_start


async def test_a_prompt_too_long_for_the_model_stays_in_the_composer(store: Store) -> None:
    provider = WindowedProvider(window=400, reply=50)
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        await talk(pilot, provider, 1)
        too_long = "far too long " * 200
        await send(pilot, too_long)
        await wait_until(pilot, settled(app))

        assert app.last_outcome.refused
        assert app.screen.query_one(Composer).text == too_long
        shown = [w.item_id for w in app.chat._messages.query(UserMessage)]
        stored = store.load_conversation(app.chat.conversation.id).items
        assert shown == [i.id for i in stored if isinstance(i, UserPrompt)]  # The first only.
        assert len(stored) == 2 and len(provider.records) == 1  # Nothing more was sent.
        (error,) = app.chat._messages.query(ErrorNotice)
        assert "This prompt is too long for the model" in str(error.render())
        assert "failed" in status(app)

        # Shortened, it goes.
        provider.play(words("Fine."))
        await send(pilot, "A short one.")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.responses[-1].text == "Fine."


def test_the_divider_and_the_context_figure(store: Store, snap_compare) -> None:  # type: ignore[no-untyped-def]
    provider = WindowedProvider(window=400, reply=50)
    app = make_app(store, provider, clock=FakeClock())  # The same speed figures anywhere.

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await talk(pilot, provider, 8)
        assert divider_above(app) is not None
        app.chat._messages.scroll_home(animate=False)  # The divider is above the view's end.
        await pilot.pause()
        target = next(iter(app.chat._messages.query(ContextDivider)))
        app.chat._messages.scroll_to_widget(target, animate=False, top=True)
        await pilot.pause()
        assert "no longer sent to the model" in screen_text(app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


class LearningProvider(WindowedProvider):
    """The windowed provider whose window shrinks to what a "too long" refusal teaches."""

    @property
    def context_window(self) -> int:
        learned = self.learned_context_window
        return min(self._window, learned) if learned else self._window


async def test_a_refused_prompt_leaves_the_divider_where_the_view_starts(store: Store) -> None:
    """The view moved for a prompt then refused: the divider goes back with the view start."""
    provider = LearningProvider(window=400, reply=50)
    provider.error = ContextOverflow("The server said the prompt is too long.", window=20)
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        for n in range(2):
            provider.play(words(f"Answer {n}: " + "and so on " * 120))
            await send(pilot, f"Question {n}?")
            await wait_until(pilot, settled(app))
        assert app.chat.conversation.view_start is None and divider_above(app) is None

        provider.play([RAISE])  # The first fit moves the view to this prompt, then the refusal.
        await send(pilot, "Question 2?")
        await wait_until(pilot, settled(app))

        assert app.last_outcome.refused
        assert app.screen.query_one(Composer).text == "Question 2?"
        assert app.chat.conversation.view_start is None
        assert store.load_conversation(app.chat.conversation.id).view_start is None
        assert not app.chat._messages.query(ContextDivider)


async def test_the_divider_goes_when_a_larger_window_holds_everything_again(
    store: Store,
) -> None:
    provider = WindowedProvider(window=400, reply=50)
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        while app.chat.conversation.view_start is None:
            await talk(pilot, provider, 1, first=len(provider.records))
        assert divider_above(app) == app.chat.conversation.view_start

        provider._window = 8000  # local.n_ctx raised, say.
        await talk(pilot, provider, 1, first=len(provider.records))

        assert app.chat.conversation.view_start is None
        assert not app.chat._messages.query(ContextDivider)
        assert not provider.records[-1].request.messages[0].content.startswith(TRIMMED_NOTE)
