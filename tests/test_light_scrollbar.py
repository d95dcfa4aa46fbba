"""The message list's scrollbar draws exactly what Textual's scrollbar draws.

Also a canary of Textual's internals (`chatui/_textual/light_scrollbar.py`): these
tests fail if Textual's bar, its renderer or how a widget creates it changes.
"""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.filter import Monochrome
from textual.geometry import Offset, Region
from textual.scrollbar import ScrollBar
from textual.widgets import Static

from chatui._textual.light_scrollbar import LightScrollBar
from chatui.widgets.message_list import MessageList


class LongList(App[None]):
    CSS = "MessageList { scrollbar-size-vertical: 2; }"

    def compose(self) -> ComposeResult:
        yield MessageList(id="messages")


def textual_lines(bar: ScrollBar, crop: Region) -> list:
    return ScrollBar.render_lines(bar, crop)  # Textual's own drawing, through Rich.


@pytest.mark.parametrize("no_color", [False, True])
async def test_the_bar_draws_like_textuals_in_every_state(
    no_color: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")  # Textual then adds a line filter.
    app = LongList()
    async with app.run_test(size=(30, 12)) as pilot:
        messages = app.query_one(MessageList)
        await messages.mount_all([Static(f"line {n}") for n in range(40)])
        await pilot.pause()
        bar = messages.vertical_scrollbar
        assert isinstance(bar, LightScrollBar)
        assert any(isinstance(f, Monochrome) for f in app.get_line_filters()) is no_color
        width, height = bar.size
        crops = [Region(0, 0, width, height), Region(0, 3, width, 5), Region(1, 0, 1, height)]
        compared = 0
        for y in (0, 3, 7.5, 13, 28):  # Thumb at the top, between cells, at the bottom.
            messages.scroll_to(y=y, animate=False)
            await pilot.pause()
            for crop in crops:
                assert bar.render_lines(crop) == textual_lines(bar, crop)
                compared += 1
        bar.mouse_over = True
        await pilot.pause()
        assert bar.render_lines(crops[0]) == textual_lines(bar, crops[0])
        bar.grabbed = Offset(0, 0)
        await pilot.pause()
        assert bar.render_lines(crops[0]) == textual_lines(bar, crops[0])
        assert compared == 15


async def test_the_bar_keeps_textuals_mouse_actions() -> None:
    app = LongList()
    async with app.run_test(size=(30, 12)) as pilot:
        messages = app.query_one(MessageList)
        await messages.mount_all([Static(f"line {n}") for n in range(40)])
        await pilot.pause()
        messages.scroll_to(y=14, animate=False)
        await pilot.pause()
        bar = messages.vertical_scrollbar
        actions = [
            next(iter(strip)).style.meta["@mouse.down"]
            for strip in bar.render_lines(Region(0, 0, *bar.size))
        ]
        # Above the thumb scrolls up, the thumb is grabbed, below it scrolls down.
        first, last = actions.index("grab"), len(actions) - actions[::-1].index("grab")
        assert set(actions[:first]) == {"scroll_up"}
        assert set(actions[first:last]) == {"grab"}
        assert set(actions[last:]) == {"scroll_down"}
        assert first > 0 and last < len(actions)
