"""UI behaviour with Pilot: Esc, the marker, editing, quitting, conversations, errors."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual import events
from textual.binding import Binding
from textual.command import CommandPalette
from textual.screen import Screen
from textual.widget import Widget

from chatui._textual import frame_clock
from chatui._textual.frame_clock import draw_now, refresh_pending
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.screens.conversations import ConversationList, TextPrompt
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage, ErrorNotice, UserMessage
from chatui.widgets.composer import Composer
from chatui.widgets.status_bar import StatusBar
from chatui.widgets.welcome import Welcome
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import RAISE, STALL, ScriptedProvider, words


async def test_reply_streams_into_one_markdown_widget_and_completes(store: Store) -> None:
    provider = ScriptedProvider(words("Hello **there** friend"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_until(pilot, settled(app))

        (view,) = app.screen.query(AssistantMessage)
        assert view.response.state is ResponseState.COMPLETE
        assert view.written == 3 and view.late_writes == 0
        assert len(view.query("Markdown")) == 1
        assert "-interrupted" not in view.classes
        assert app.screen.query_one(StatusBar).state == "idle"
        assert app.screen.query_one(Composer).text == ""


async def test_ten_escapes_give_one_interrupted_marker(store: Store) -> None:
    provider = ScriptedProvider([*words("some partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await wait_until(pilot, lambda: app.chat.query(AssistantMessage).first().written == 2)

        await pilot.press(*["escape"] * 10)
        await wait_until(pilot, settled(app))

        views = app.screen.query(AssistantMessage)
        assert len(views) == 1
        assert "-interrupted" in views.first().classes
        markers = [m for m in app.screen.query(".marker") if m.display]
        assert len(markers) == 1
        assert app.screen.query_one(StatusBar).state == "stopped"
        assert app.screen.query_one(StatusBar).stop_ms is not None
        assert provider.last.closed
        assert views.first().late_writes == 0
        stored = store.load_conversation(app.chat.conversation.id).items
        assert [i.state for i in stored if isinstance(i, ModelResponse)] == [
            ResponseState.INTERRUPTED
        ]


async def test_escape_when_idle_changes_nothing(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        app.screen.query_one(Composer).text = "draft"
        await pilot.press("escape")
        await pilot.pause()

        assert app.screen.query_one(Composer).text == "draft"
        assert app.screen.query_one(StatusBar).state == "idle"
        assert store.load_conversation(app.chat.conversation.id).items == []


async def test_escape_closes_the_conversation_list_not_a_turn(store: Store) -> None:
    provider = ScriptedProvider([*words("long reply", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))

        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConversationList))

        assert app.chat.turn is not None and app.chat.turn.running
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED


async def test_escape_is_taken_before_it_reaches_the_composer(store: Store) -> None:
    # One trip through the event loop, not four: the key must not visit the composer.
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        composer = app.screen.query_one(Composer)
        seen: list[str] = []
        composer.message_signal.subscribe(
            composer,
            lambda m: seen.append(m.key) if isinstance(m, events.Key) else None,
            immediate=True,
        )
        await pilot.press("x")
        assert seen == ["x"]  # The probe sees keys that do reach the composer.
        await send(pilot, "go")
        await provider.last.stalled.wait()
        seen.clear()

        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert seen == []


async def test_escape_is_acknowledged_as_it_reaches_the_app(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        view = app.chat.query(AssistantMessage).last()

        # No await from here: nothing else runs before the checks.
        assert app.post_message(events.Key("escape", None))
        assert app.chat.turn.token.cancelled
        assert view.closed and view.stopped_at is not None
        assert app.screen.query_one(StatusBar).state == "stopping"

        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert view.late_writes == 0


async def test_escape_posted_from_another_thread_stops_through_the_queue(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()

        await asyncio.to_thread(app.post_message, events.Key("escape", None))
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED


async def test_the_terminals_escape_stops_on_its_first_trip_through_the_loop(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()

        app._driver.send_message(events.Key("escape", None))  # As the terminal's reader does.
        await asyncio.sleep(0)  # One trip: callbacks queued before this task's next step run.
        assert app.chat.turn.token.cancelled
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED


class KeyRecorder(Widget, can_focus=True):
    """Records the keys it receives, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def on_key(self, event: events.Key) -> None:
        self.keys.append(event.key)


async def test_a_frame_due_before_the_terminals_escape_runs_after_the_stop(
    store: Store,
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        recorder = KeyRecorder()
        await app.chat.mount(recorder)
        recorder.focus()
        await pilot.pause()

        app._driver.send_message(events.Key("escape", None))
        # No await from here: a frame that was already due runs before the key's callback.
        draw_now(app.screen)
        assert app.chat.turn.token.cancelled

        await wait_until(pilot, settled(app))
        await pilot.pause()
        assert recorder.keys == []  # Taken once: not also passed on as a key.
        assert app.last_outcome.state is ResponseState.INTERRUPTED


async def test_the_stop_is_drawn_as_soon_as_it_reaches_the_screen(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    draws: list[tuple[bool, bool, int]] = []  # Marked, still pending, marker height after.

    def recording_draw_now(screen: Screen) -> bool:
        view = screen.query(AssistantMessage).last()
        marked, pending = view.stopped_at is not None, refresh_pending(screen, view)
        result = draw_now(screen)
        draws.append((marked, pending, view.query_one(".marker").region.height))
        return result

    monkeypatch.setattr(frame_clock, "draw_now", recording_draw_now)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await pilot.pause()

        assert app.post_message(events.Key("escape", None))
        await wait_until(pilot, lambda: bool(draws))
        assert draws[0] == (True, False, 1)  # The marker, laid out and drawn.
        await wait_until(pilot, settled(app))


async def test_the_stop_shows_on_the_status_line_before_anything_else_is_drawn(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    frames: list[tuple[set[int] | None, str, bool]] = []  # Rows drawn, status, reply marked.
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await pilot.pause()
        status = app.chat.query_one(StatusBar)
        view = app.chat.query(AssistantMessage).last()
        display = app._display

        def recording_display(screen: Screen, update: object) -> None:
            rows = {y for y, _, _ in update.spans} if hasattr(update, "spans") else None
            frames.append((rows, status.state, view.stopped_at is not None))
            display(screen, update)

        monkeypatch.setattr(app, "_display", recording_display)
        assert app.post_message(events.Key("escape", None))
        # The first frame, drawn before the Esc's callback returned: the status row alone,
        # with the reply already closed to more text.
        assert frames == [({status.region.y}, "stopping", True)]
        await wait_until(pilot, settled(app))
        marker = view.query_one(".marker")
        assert marker.display and marker.region.y not in frames[0][0]  # In a later frame.


async def test_the_stop_is_on_screen_before_the_partial_reply_is_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    draws: list[float] = []  # When each early draw ended.
    saves: list[tuple[ResponseState, int]] = []  # What was stored, and the draws before it.

    def recording_draw_now(screen: Screen) -> bool:
        result = draw_now(screen)
        draws.append(time.monotonic())
        return result

    save_item = store.save_item

    def recording_save_item(conversation_id: str, item: object, *parent: object) -> None:
        if isinstance(item, ModelResponse):
            saves.append((item.state, len(draws)))
        save_item(conversation_id, item, *parent)

    monkeypatch.setattr(frame_clock, "draw_now", recording_draw_now)
    monkeypatch.setattr(store, "save_item", recording_save_item)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await pilot.pause()
        draws.clear()

        assert app.post_message(events.Key("escape", None))
        await wait_until(pilot, settled(app))
        assert saves[-1] == (ResponseState.INTERRUPTED, 1)  # Stored after the stop's draw.
        assert app.chat.turn_view.stop_drawn_at >= draws[0]  # "stopped in" ends at that draw.


async def test_stopped_in_counts_from_when_the_escs_byte_was_read(store: Store) -> None:
    """The terminal driver sets a key's `time` to its read; Pilot has none, so set it here."""
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        key = events.Key("escape", None)
        key.time = time.monotonic() - 0.5  # Read half a second ago (the app was busy).

        assert app.post_message(key)
        await wait_until(pilot, settled(app))
        status = app.screen.query_one(StatusBar)
        assert status.state == "stopped"
        assert app.chat.turn_view.stop_requested_at == key.time
        assert 500 <= status.stop_ms == (app.chat.turn_view.stop_drawn_at - key.time) * 1000


async def test_an_escape_that_stops_nothing_keeps_its_place_among_the_keys(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        recorder = KeyRecorder()
        await app.chat.mount(recorder)
        recorder.focus()
        await pilot.pause()

        for key in ["a", "escape", "b", "escape", "c"]:
            app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
        await wait_until(pilot, lambda: len(recorder.keys) == 5)
        assert recorder.keys == ["a", "escape", "b", "escape", "c"]


class EscapeMenu(Widget, can_focus=True):
    """A stand-in for a dropdown on the chat screen: it binds Esc itself."""

    BINDINGS = [Binding("escape", "close", "Close")]
    closed = 0

    def action_close(self) -> None:
        self.closed += 1


async def test_a_focused_widget_that_binds_escape_gets_it_first(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        menu = EscapeMenu()
        await app.chat.mount(menu)
        menu.focus()
        await pilot.pause()

        await pilot.press("escape")
        assert menu.closed == 1
        assert app.chat.turn.running

        app.screen.query_one(Composer).focus()
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert menu.closed == 1
        assert app.last_outcome.state is ResponseState.INTERRUPTED


async def test_escape_closes_the_command_palette_not_a_turn(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))

        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette))
        assert app.chat.turn.running

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED


async def test_edit_puts_the_interrupted_prompt_back_to_send_as_a_new_version(
    store: Store,
) -> None:
    provider = ScriptedProvider([STALL], words("second answer"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "my long\nprompt")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert app.screen.query_one(Composer).text == ""

        await pilot.press("ctrl+e")
        assert app.screen.query_one(Composer).text == "my long\nprompt"
        await pilot.press("!", "enter")
        await wait_until(pilot, settled(app))

        conversation = store.load_conversation(app.chat.conversation.id)
        prompts = [i.text for i in conversation.items if isinstance(i, UserPrompt)]
        assert prompts == ["my long\nprompt!"]
        kept = [i.text for i in conversation.all_items() if isinstance(i, UserPrompt)]
        assert kept == ["my long\nprompt", "my long\nprompt!"]  # The old one, as a version.
        # The new version's history carries no trace of the old one or its reply.
        (sent,) = [m.content for m in provider.records[1].request.messages if m.role == "user"]
        assert sent == "my long\nprompt!"


async def test_quitting_stops_the_turn_and_stores_the_partial(store: Store) -> None:
    provider = ScriptedProvider([*words("half of it", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.started.wait()
        await provider.last.stalled.wait()
        conversation_id = app.chat.conversation.id
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    assert provider.last.closed
    prompt, response = store.load_conversation(conversation_id).items
    assert prompt.text == "go"
    assert response.state is ResponseState.INTERRUPTED and response.text == "half of it"


async def test_ctrl_c_stops_the_reply_and_twice_quits(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.started.wait()
        await provider.last.stalled.wait()
        conversation_id = app.chat.conversation.id
        await pilot.press("ctrl+c")
        await wait_until(pilot, settled(app))
        assert app.is_running and app.last_outcome.state is ResponseState.INTERRUPTED
        await pilot.press("ctrl+c", "ctrl+c")
        await wait_until(pilot, lambda: not app.is_running)

    response = store.load_conversation(conversation_id).items[1]
    assert response.state is ResponseState.INTERRUPTED and response.text == "partial"


async def test_errors_show_inline_and_keep_the_partial(store: Store) -> None:
    provider = ScriptedProvider(
        [*words("started ", end=None), RAISE], error=ConnectionError("connection reset by peer")
    )
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await wait_until(pilot, settled(app))

        (notice,) = app.screen.query(ErrorNotice)
        assert "connection reset by peer" in str(notice.render())
        (view,) = app.screen.query(AssistantMessage)
        assert "-failed" in view.classes and view.response.text == "started "
        assert app.screen.query_one(StatusBar).state == "failed"


async def test_without_a_provider_the_screen_says_how_to_configure_one(store: Store) -> None:
    app = make_app(store, None, provider_error="No provider: set `provider` in config.toml.")
    async with app.run_test() as pilot:
        welcome = app.chat.query_one(Welcome)  # The empty conversation's page says why.
        await wait_until(pilot, lambda: "✗ No provider: set `provider`" in str(welcome.render()))
        assert not app.screen.query(ErrorNotice)
        await send(pilot, "hello?")
        await pilot.pause()
        (notice,) = app.screen.query(ErrorNotice)
        assert "set `provider`" in str(notice.render())
        assert store.load_conversation(app.chat.conversation.id).items == []
        assert app.screen.query_one(Composer).text == "hello?"  # Nothing lost.


async def test_conversation_list_new_switch_rename_delete(store: Store) -> None:
    provider = ScriptedProvider(words("first answer"), words("second answer"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "first question")
        await wait_until(pilot, settled(app))
        first_id = app.chat.conversation.id

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.chat.conversation.id != first_id)
        assert not app.screen.query(UserMessage)
        await send(pilot, "second question")
        await wait_until(pilot, settled(app))
        second_id = app.chat.conversation.id

        # Switch back to the first: it is listed second (older).
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: app.chat.conversation.id == first_id)
        assert [str(m.render()) for m in app.screen.query(UserMessage)] == ["first question"]

        # Rename it.
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one("Input").value = "Renamed"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
        assert dict(store.list_conversations())[first_id] == "Renamed"

        # Delete the other one.
        await pilot.press("down", "ctrl+d")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
        assert [cid for cid, _ in store.list_conversations()] == [first_id]
        assert second_id not in dict(store.list_conversations())
        await pilot.press("escape")


async def test_first_prompt_titles_the_conversation(store: Store) -> None:
    app = make_app(store, ScriptedProvider(words("ok")))
    async with app.run_test() as pilot:
        await send(pilot, "How do   I bake bread at home without yeast or any special tools?")
        await wait_until(pilot, settled(app))

    ((_, title),) = store.list_conversations()
    assert title.startswith("How do I bake bread") and title.endswith("…")


async def test_stored_conversation_shows_interrupted_marker_after_reload(store: Store) -> None:
    conversation = store.create_conversation("old")
    store.save_item(conversation.id, UserPrompt("q"))
    response = ModelResponse("scripted", "script-1", state=ResponseState.INTERRUPTED)
    response.append_text("cut short")
    store.save_item(conversation.id, response)
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await app.open_conversation(conversation.id)
        await pilot.pause()

        (view,) = app.screen.query(AssistantMessage)
        assert "-interrupted" in view.classes
        assert app.chat.check_action("continue_reply", ()) is True  # Ctrl+G goes on with it.
