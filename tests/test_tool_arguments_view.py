"""A tool call's long arguments stream in at a cost per delta that does not grow with them.

Each delta shows at once, and the text shown is always exactly the arguments
so far (made visible, never markup); when the call ends, or is cut off, they
are shown whole as one text, as a call loaded from the store is.
"""

from __future__ import annotations

import itertools

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from chatui.messages import ToolCallPart
from chatui.sanitize import visible
from chatui.widgets.tool_call import ToolCallView
from tests.support.app import wait_until

WORDS = '{"text": "Dear [b]reader[/b],\\n\\tsoda bread needs flour, soda and buttermilk. \x1b[2J'


class OneCall(App[None]):
    def __init__(self, call: ToolCallPart) -> None:
        super().__init__()
        self.call = call

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield ToolCallView(self.call)


def arguments_shown(view: ToolCallView) -> str:
    return "".join(str(s.render()) for s in view.query(".tool-arguments").results(Static))


def lines_shown(view: ToolCallView) -> int:
    return sum(s.outer_size.height for s in view.query(".tool-arguments").results(Static))


def lines_of(text: str, view: ToolCallView) -> int:
    """How many lines `text` takes at the width of the view's arguments."""
    return len(Content(text).wrap(view.query(".tool-arguments").last().content_size.width))


def deltas(count: int, size: int = 5, words: str = WORDS) -> list[str]:
    text = "".join(itertools.islice(itertools.cycle(words), count * size))
    return [text[n : n + size] for n in range(0, len(text), size)]


@pytest.mark.parametrize("words", [WORDS, WORDS.replace(" ", "\t")], ids=["spaces", "tabs"])
async def test_long_arguments_cost_each_delta_what_short_ones_do(
    words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = ToolCallPart("c1", "write_note")
    app = OneCall(call)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(ToolCallView)
        given: list[int] = []  # The length of each text a widget was given.
        update = Static.update

        def recording_update(widget: Static, content="", **kwargs):  # type: ignore[no-untyped-def]
            given.append(len(str(content)))
            return update(widget, content, **kwargs)

        monkeypatch.setattr(Static, "update", recording_update)
        for n, delta in enumerate(deltas(8_000, words=words), 1):  # 40 KB.
            call.arguments += delta
            view.show_arguments()
            if n % 1_000 == 0:
                await pilot.pause()
                assert arguments_shown(view) == visible(call.arguments)
                if "\t" not in words:  # Tabs are expanded as lines wrap: cut where they may.
                    # The lines the whole would show: nothing moves as the pieces join.
                    assert lines_shown(view) == lines_of(visible(call.arguments), view)
        await pilot.pause()
        assert view.status == "streaming"
        # Each delta redraws a few lines, not the 40 KB so far.
        assert max(given) < 5_000

        call.complete = True
        view.show_arguments()
        await pilot.pause()
        assert view.status == "called"
        assert str(view.query_one(".tool-arguments", Static).render()) == visible(call.arguments)


@pytest.mark.parametrize("count", [1, 700, 3_000])
async def test_arguments_cut_off_mid_stream_are_shown_whole(count: int) -> None:
    call = ToolCallPart("c1", "write_note")
    app = OneCall(call)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(ToolCallView)
        for delta in deltas(count):
            call.arguments += delta
            view.show_arguments()
        view.cut_off()  # The reply was stopped with the call's arguments unfinished.
        await wait_until(pilot, lambda: len(view.query(".tool-arguments")) == 1)
        assert view.status == "cut off"
        assert arguments_shown(view) == visible(call.arguments)
        assert "\x1b" not in arguments_shown(view)


async def test_pieces_cut_at_one_width_are_joined_when_it_changes() -> None:
    call = ToolCallPart("c1", "write_note")
    app = OneCall(call)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(ToolCallView)
        for delta in deltas(1_000):
            call.arguments += delta
            view.show_arguments()
        await pilot.pause()
        assert len(view.query(".tool-arguments")) > 2  # In pieces.

        await pilot.resize_terminal(60, 24)  # They wrapped at 80 columns: joined.
        await wait_until(pilot, lambda: len(view.query(".tool-arguments")) == 1)
        for delta in deltas(1_000):  # And cut again at the new width.
            call.arguments += delta
            view.show_arguments()
        await pilot.pause()
        assert len(view.query(".tool-arguments")) > 2
        assert arguments_shown(view) == visible(call.arguments)
        assert lines_shown(view) == lines_of(visible(call.arguments), view)
