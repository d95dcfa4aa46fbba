"""The end of a reply is drawn at once, not at the frame clock's next tick.

Also: a reply's box renders one middle line and repeats it, with the same
result as rendering every line. A canary of Textual's internals too:
`chatui/_textual/frame_clock.py` runs the private frame callback and reads
private refresh flags, and these tests fail if Textual changes them.
"""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Markdown, Static

from chatui._textual import frame_clock
from chatui._textual.frame_clock import draw_now, draw_widgets_now, refresh_pending
from chatui.messages import ModelResponse, ResponseState
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, words


class OneLine(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("one line")


async def test_draw_now_draws_at_once_and_only_what_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fails if Textual's private frame callback is gone or no longer draws.
    frames: list[Screen] = []
    refresh = Screen._compositor_refresh

    def counting_refresh(screen: Screen) -> None:
        frames.append(screen)
        refresh(screen)

    monkeypatch.setattr(Screen, "_compositor_refresh", counting_refresh)
    app = OneLine()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        screen, drawn = app.screen, len(frames)
        screen.refresh(layout=True)  # No await from here on: the clock cannot tick.
        assert draw_now(screen)
        assert len(frames) > drawn
        drawn = len(frames)
        assert draw_now(screen)  # Nothing changed since: nothing to draw.
        assert len(frames) == drawn


class StatusBelow(App[None]):
    CSS = "#status { dock: bottom; height: 1; }"

    def compose(self) -> ComposeResult:
        yield Static("a reply", id="reply")
        yield Static("streaming", id="status")


async def test_draw_widgets_now_draws_only_those_widgets_even_in_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fails if Textual's compositor calls or App._display change.
    app = StatusBelow()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        updates: list[object] = []
        monkeypatch.setattr(app, "_display", lambda screen, update: updates.append(update))
        screen = app.screen
        reply, status = app.query_one("#reply", Static), app.query_one("#status", Static)
        reply.update("a longer reply\nover two lines")  # Needs a layout: not drawn here.
        status.update("stopping")
        with app.batch_update():  # Textual's Markdown holds one open while it mounts.
            assert draw_widgets_now(screen, status)
            assert app._batch_count == 1  # Still held for everything else.
        assert len(updates) == 1
        update = updates[0]
        assert {y for y, _, _ in update.spans} == {9}  # The status row, and nothing else.
        drawn = update.render_segments(app.console)
        assert "stopping" in drawn and "reply" not in drawn
        assert refresh_pending(screen, reply)  # The reply is left to the next frame.
        assert not draw_widgets_now(screen, status)  # Nothing changed since.
        assert len(updates) == 1


async def test_draw_widgets_now_draws_nothing_under_a_dialog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = StatusBelow()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        screen, status = app.screen, app.query_one("#status", Static)
        await app.push_screen(ModalScreen())
        await pilot.pause()
        updates: list[object] = []
        monkeypatch.setattr(app, "_display", lambda screen, update: updates.append(update))
        status.update("stopping")
        assert not draw_widgets_now(screen, status)
        assert updates == []


async def test_a_reply_is_drawn_as_its_stream_ends(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply = "The whole reply, every word of it."
    drawn: list[str] = []  # The text in the reply's widget at each early draw.
    wrapped_up: list[bool] = []  # Whether the turn had already stored and ended by then.
    pending: list[bool] = []  # Whether a change to the reply had yet to reach the screen.
    left: list[bool] = []  # Whether the draw left anything for the frame clock.

    def recording_draw_now(screen: Screen) -> bool:
        view = screen.query(AssistantMessage).last()
        drawn.append("".join(m.source for m in view.query(Markdown)))
        wrapped_up.append(view.response.state is not ResponseState.STREAMING)
        pending.append(refresh_pending(screen, view))
        result = draw_now(screen)
        left.append(screen._layout_required or bool(screen._dirty_widgets))
        return result

    monkeypatch.setattr(frame_clock, "draw_now", recording_draw_now)
    app = make_app(store, ScriptedProvider(words(reply)))
    async with app.run_test(size=(60, 20)) as pilot:
        await send(pilot, "Say it.")
        await wait_until(pilot, settled(app))
        await wait_until(pilot, lambda: bool(drawn))
    assert drawn == [reply]  # Once, with all the text,
    assert wrapped_up == [False]  # before the turn's bookkeeping,
    assert pending == [False]  # with every change to it on its way to the screen,
    assert left == [False]  # and all of it drawn.


async def test_a_refresh_is_pending_until_it_reaches_the_screen() -> None:
    app = OneLine()
    async with app.run_test(size=(40, 10)) as pilot:
        await pilot.pause()
        screen, line = app.screen, app.query_one(Static)
        assert not refresh_pending(screen, screen)
        line.update("another line")
        assert refresh_pending(screen, screen)
        assert refresh_pending(screen, line)
        await pilot.pause()
        assert not refresh_pending(screen, screen)


class TallReply(App[None]):
    CSS_PATH = "../chatui/app.tcss"

    def compose(self) -> ComposeResult:
        response = ModelResponse("scripted", "script-1", state=ResponseState.INTERRUPTED)
        response.append_text("\n\n".join(f"Paragraph {n}." for n in range(30)))
        yield AssistantMessage(response, streaming=False)


async def test_reply_box_renders_like_every_line_rendered() -> None:
    app = TallReply()
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        box = app.query_one(AssistantMessage)
        width, height = box.outer_size
        assert height > 50
        crops = [
            Region(0, 0, width, height),  # Both borders.
            Region(0, 10, width, 20),  # Middle lines only.
            Region(0, 0, width, 3),  # The top border and two lines.
            Region(0, height - 25, width, 25),  # The bottom border.
            Region(2, 5, width - 4, 30),  # Cut at both sides.
        ]
        for crop in crops:
            box.refresh()
            fast = box.render_lines(crop)
            box.refresh()
            every = Widget.render_lines(box, crop)
            assert len(fast) == crop.height
            assert fast == every
