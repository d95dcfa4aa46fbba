"""One turn per conversation, Esc in every window of a turn, and failures that stay on screen."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

import pytest
from textual import events

from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import StreamEnd, TextDelta, ToolCallStart
from chatui.screens.conversations import ConversationList, TextPrompt
from chatui.screens.turn_view import TurnView
from chatui.session import Session
from chatui.store import Store
from chatui.turn import ResponseStarted, TurnEvent
from chatui.widgets.chat_message import AssistantMessage, ErrorNotice, UserMessage
from chatui.widgets.composer import Composer
from chatui.widgets.message_list import MessageList
from chatui.widgets.status_bar import Phase, StatusBar
from tests.support.app import make_app, screen_text, send, settled, wait_until
from tests.support.scripted import STALL, ScriptedProvider, words


def key(name: str) -> events.Key:
    return events.Key(name, name if len(name) == 1 else None)


def type_keys(app, text: str) -> None:
    """Post keys as one read from a terminal delivers them: all at once, no await between."""
    for char in text:
        app.post_message(key("enter" if char == "\r" else "space" if char == " " else char))


async def delete_the_open_conversation(pilot) -> None:
    """Ctrl+O, delete the highlighted (open) conversation, confirm, close the list."""
    app = pilot.app
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
    await pilot.press("ctrl+d")
    await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
    await pilot.press("escape")


def prompts(store: Store, app) -> list[str]:
    items = store.load_conversation(app.chat.conversation.id).items
    return [i.text for i in items if isinstance(i, UserPrompt)]


async def test_enter_twice_in_one_read_starts_one_turn(store: Store) -> None:
    provider = ScriptedProvider([*words("only one", end=None), STALL], words("never"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        app.screen.query_one(Composer).text = "hello"
        type_keys(app, "\r\r")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await pilot.pause()

        assert len(provider.records) == 1
        assert prompts(store, app) == ["hello"]
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert len(provider.records) == 1
        assert provider.last.closed


async def test_a_two_line_paste_without_bracketed_paste_sends_one_prompt_and_keeps_the_rest(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("reply", end=None), STALL], words("second"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await pilot.click(Composer)
        type_keys(app, "one\rtwo\r")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await wait_until(pilot, lambda: app.screen.query_one(Composer).text == "two")
        await pilot.pause()

        assert len(provider.records) == 1
        assert provider.last.request.messages[-1].content == "one"
        assert prompts(store, app) == ["one"]

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        composer = app.screen.query_one(Composer)
        assert composer.text == "two" and not composer.locked  # Kept, and can be sent now.
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))
        assert provider.last.request.messages[-1].content.endswith("\n\ntwo")
        assert prompts(store, app) == ["one", "two"]


async def test_enter_then_escape_in_one_read_stops_the_turn_the_enter_started(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("this reply must never run to its end " * 20))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        app.screen.query_one(Composer).text = "stop me"
        type_keys(app, "\r")
        app.post_message(key("escape"))
        await wait_until(pilot, settled(app))

        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert all(r.yielded == 0 for r in provider.records)
        assert app.screen.query_one(StatusBar).state == "stopped"
        assert prompts(store, app) == ["stop me"]  # The prompt is never lost...
        assert app.chat.check_action("retry", ()) is True  # ...and Ctrl+R retries it.


async def test_an_escape_before_the_enter_does_not_stop_the_turn(store: Store) -> None:
    provider = ScriptedProvider(words("a whole reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        app.screen.query_one(Composer).text = "go"
        app.post_message(key("escape"))
        type_keys(app, "\r")
        await wait_until(pilot, settled(app))

        assert app.last_outcome.state is ResponseState.COMPLETE


async def test_escape_while_a_finished_turn_wraps_up_changes_nothing(store: Store) -> None:
    conversation = store.create_conversation()
    for n in range(45):
        store.save_item(conversation.id, UserPrompt(f"old prompt {n}"))
        response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
        response.append_text(f"old reply {n}")
        store.save_item(conversation.id, response)
    provider = ScriptedProvider(words("the last reply"))
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    provider.close = close  # type: ignore[attr-defined]
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await app.open_conversation(conversation.id)
        await pilot.press("ctrl+u")  # All 90 items mounted: the wrap-up re-mounts the list.
        await wait_until(pilot, lambda: len(app.chat.query(UserMessage)) == 45)
        show = app.chat._show_outcome
        pressed: list[str] = []

        async def esc_during_wrap_up(turn, outcome) -> None:
            pressed.append("escape")
            app.post_message(key("escape"))  # Esc the moment the reply has ended.
            await show(turn, outcome)

        app.chat._show_outcome = esc_during_wrap_up  # type: ignore[method-assign]
        await send(pilot, "one more")
        await wait_until(pilot, settled(app))

        assert pressed == ["escape"]
        assert app.last_outcome.state is ResponseState.COMPLETE
        view = app.chat.query(AssistantMessage).last()
        assert view.response.text == "the last reply"
        assert "-interrupted" not in view.classes
        assert app.screen.query_one(StatusBar).state == "idle"
        items = store.load_conversation(conversation.id).items
        assert items[-1].state is ResponseState.COMPLETE
        assert not app.screen.query_one(Composer).locked

        await pilot.press("ctrl+q")
    assert closed == [True]


async def test_deleting_the_streaming_conversation_stops_its_turn_first(store: Store) -> None:
    provider = ScriptedProvider([*words("streaming on", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "a prompt")
        await provider.last.stalled.wait()
        doomed = app.chat.conversation.id

        await delete_the_open_conversation(pilot)
        await wait_until(pilot, lambda: app.chat.conversation.id != doomed)

        assert app.is_running
        assert provider.last.closed
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert doomed not in dict(store.list_conversations())


async def test_a_full_disk_mid_reply_is_shown_and_the_app_keeps_running(store: Store) -> None:
    partial = "the partial reply " + "y" * 8000  # Storing it needs new pages.
    provider = ScriptedProvider([*words(partial, end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await provider.last.stalled.wait()
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # The disk is full now.
        await pilot.press("escape")  # Storing the partial reply fails.
        await wait_until(pilot, settled(app))

        assert app.is_running
        assert app.last_outcome.state is ResponseState.FAILED
        (notice,) = app.chat.query(ErrorNotice)
        assert "could not be saved" in str(notice.render())
        view = app.chat.query(AssistantMessage).last()
        assert view.response.text == partial  # Still on screen.
        assert app.screen.query_one(StatusBar).state == "failed"
        assert app.chat.check_action("retry", ()) is True


HOSTILE_MODELS = ["tiny-[Q4_K_M].gguf", "m[@click=app.quit]x.gguf", 'm[x="]y.gguf']


async def test_model_names_are_shown_literally_never_as_markup(store: Store) -> None:
    for name in HOSTILE_MODELS:
        provider = ScriptedProvider(words("fine"), model=name)
        app = make_app(store, provider)
        async with app.run_test() as pilot:
            await send(pilot, "hi")
            await wait_until(pilot, settled(app))

            assert app.last_outcome.state is ResponseState.COMPLETE
            assert name in screen_text(app)  # In the reply's border and in the status bar.
            assert str(app.screen.query_one(StatusBar).render()).count(name) == 1


async def test_bidirectional_controls_are_shown_not_obeyed(store: Store) -> None:
    provider = ScriptedProvider(words("abc\u202edef"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "x\u2066y")
        await wait_until(pilot, settled(app))

        user = app.chat.query(UserMessage).last()
        assert user.render().plain == "x\\u2066y"
        assert "\u202e" not in screen_text(app) and "\u2066" not in screen_text(app)
        assert "abc\\u202edef" in screen_text(app)


async def test_two_chatuis_on_one_database_each_write_their_own_conversation(
    store: Store,
) -> None:
    other = Store(store.path)  # A second chatui, in another terminal.
    try:
        first = make_app(store, ScriptedProvider(words("from one")))
        second = make_app(other, ScriptedProvider(words("from two")))
        async with first.run_test() as one, second.run_test() as two:
            assert first.chat.conversation.id != second.chat.conversation.id
            await send(one, "hello from one")
            await send(two, "hello from two")
            await wait_until(one, settled(first))
            await wait_until(two, settled(second))

            # The second cannot open the first's conversation while the first has it.
            await second.open_conversation(first.chat.conversation.id)
            assert second.chat.conversation.id != first.chat.conversation.id
            await wait_until(
                two,
                lambda: any("open in another chatui" in n.message for n in second._notifications),
            )

            for app, text in ((first, "hello from one"), (second, "hello from two")):
                assert prompts(store, app) == [text]
    finally:
        other.close()


async def test_a_reply_still_being_written_elsewhere_never_looks_complete(store: Store) -> None:
    other = Store(store.path)  # Another chatui, streaming into its conversation.
    try:
        conversation = other.create_conversation("theirs")
        other.save_item(conversation.id, UserPrompt("their prompt"))
        response = ModelResponse("scripted", "script-1")
        response.append_text("half of their reply")
        other.save_item(conversation.id, response)
        other.release_conversation(conversation.id)  # Even if its claim is gone.

        app = make_app(store, ScriptedProvider())
        async with app.run_test() as pilot:
            await app.open_conversation(conversation.id)
            await pilot.pause()
            view = app.chat.query(AssistantMessage).last()
            assert view.response.state is ResponseState.STREAMING
            assert "another chatui is still writing it" in screen_text(app)
    finally:
        other.close()


async def test_enter_then_ctrl_q_in_one_read_starts_no_turn(store: Store) -> None:
    provider = ScriptedProvider([*words("never", end=None), STALL])
    closing, closed = asyncio.Event(), asyncio.Event()

    async def close() -> None:
        closing.set()
        await closed.wait()  # Closing takes a while: no turn may start meanwhile.

    provider.close = close  # type: ignore[attr-defined]
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        app.screen.query_one(Composer).text = "my prompt"
        type_keys(app, "\r")
        app.post_message(key("ctrl+q"))
        await closing.wait()
        await pilot.pause()  # Whatever the Enter could have started has had its turn.
        assert provider.records == []
        closed.set()
        await wait_until(pilot, lambda: not app.is_running)
    assert provider.records == []


async def test_ctrl_n_then_text_and_enter_in_one_read_sends_in_the_new_conversation(
    store: Store,
) -> None:
    provider = ScriptedProvider(words("first reply"), words("second reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "first")
        await wait_until(pilot, settled(app))
        old = app.chat.conversation.id

        app.post_message(key("ctrl+n"))
        type_keys(app, "hi\r")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await wait_until(pilot, settled(app))

        assert app.chat.conversation.id != old
        assert prompts(store, app) == ["hi"]
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert [
            i.text for i in store.load_conversation(old).items if isinstance(i, UserPrompt)
        ] == ["first"]


async def test_deleting_the_open_empty_conversation_moves_to_a_new_one(store: Store) -> None:
    provider = ScriptedProvider(words("reply"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        doomed = app.chat.conversation.id
        await delete_the_open_conversation(pilot)
        await wait_until(pilot, lambda: app.chat.conversation.id != doomed)

        await send(pilot, "hello")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert prompts(store, app) == ["hello"]


async def test_a_provider_close_that_raises_still_quits_cleanly(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])

    async def close() -> None:
        raise RuntimeError("the engine thread died")

    provider.close = close  # type: ignore[attr-defined]
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await provider.last.stalled.wait()
        conversation_id = app.chat.conversation.id
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)
    assert app.return_code == 0
    assert [i.state for i in store.load_conversation(conversation_id).items[1:]] == [
        ResponseState.INTERRUPTED
    ]


async def test_a_second_ctrl_q_exits_when_the_stop_cannot_finish(store: Store) -> None:
    release = asyncio.Event()

    class Wedged(ScriptedProvider):
        @asynccontextmanager
        async def stream(self, request):
            async with super().stream(request) as events:
                try:
                    yield events
                finally:
                    while not release.is_set():  # Waits through cancellation, like a stuck job.
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.shield(release.wait())

    provider = Wedged([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await provider.last.stalled.wait()
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running  # Still waiting for the stop...
        await pilot.press("ctrl+q")  # ...but the second press is taken, and exits.
        await wait_until(pilot, lambda: not app.is_running)
        release.set()
    assert app.return_code == 0


async def test_the_screen_drops_the_late_events_of_an_older_turn(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing renders after a stop: an older turn's event, delivered late, shows nothing."""
    observers = []
    new_turn = Session.new_turn

    def recording_new_turn(self: Session, *args, **kwargs):
        observers.append(kwargs["observer"])
        return new_turn(self, *args, **kwargs)

    monkeypatch.setattr(Session, "new_turn", recording_new_turn)
    provider = ScriptedProvider(
        [*words("first", end=None), STALL], [*words("second", end=None), STALL]
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "one")
        await provider.last.stalled.wait()
        old_turn = app.chat.turn
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await send(pilot, "two")
        await wait_until(pilot, lambda: len(provider.records) == 2)
        await provider.last.stalled.wait()
        await wait_until(pilot, lambda: app.chat.query(AssistantMessage).last().written == 1)
        views = list(app.chat.query(AssistantMessage))
        current = views[-1]

        late = [
            TextDelta(" LATE"),
            ResponseStarted(ModelResponse("scripted", "script-1")),
            ToolCallStart(0, "call_1", "late_tool"),
            StreamEnd("stop"),
        ]
        for payload in late:
            await observers[0].on_event(TurnEvent(old_turn.id, payload))
        await pilot.pause()

        assert list(app.chat.query(AssistantMessage)) == views  # No reply view added.
        assert not current.closed and current.written == 1  # The running reply goes on.
        assert all("LATE" not in str(view.response.text) for view in views)
        assert app.screen.query_one(StatusBar).state == "streaming"
        assert app.chat.turn.stoppable


async def test_the_status_line_says_each_phase_in_the_words_it_always_used(store: Store) -> None:
    words_shown = [
        *("idle", "loading", "waiting", "streaming", "awaiting approval", "running tools"),
        *("stopping", "stopped", "failed"),
    ]
    app = make_app(store, ScriptedProvider())
    async with app.run_test():
        status = app.chat.query_one(StatusBar)
        status.detail = ""
        shown = []
        for phase in Phase:
            status.state = phase
            shown.append(str(status.render()).split(" │ ")[1])

    assert shown == words_shown


async def test_a_request_that_goes_on_with_a_reply_on_screen_is_shown_in_that_reply(
    store: Store,
) -> None:
    """A turn view made with the replies on screen adopts the one a request goes on with."""
    app = make_app(store, ScriptedProvider(words("the first reply")))
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_until(pilot, settled(app))
        screen = app.chat
        (reply,) = screen.query(AssistantMessage)
        view = TurnView(
            screen,
            screen.conversation,
            messages=screen.query_one(MessageList),
            status=screen.query_one(StatusBar),
            composer=screen.query_one(Composer),
            approved=set(),
            stop=screen.action_stop,
            shown=[reply],
        )
        await view.on_event(TurnEvent(0, ResponseStarted(reply.response)))
        await view.on_event(TurnEvent(0, ResponseStarted(ModelResponse("scripted", "script-1"))))
        await pilot.pause()

        replies = list(screen.query(AssistantMessage))
        assert replies[0] is reply and len(replies) == 2  # The first adopted, the second new.
        assert view.views == replies and view.current is replies[1]
