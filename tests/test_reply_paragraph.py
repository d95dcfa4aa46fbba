"""A reply's paragraph asks for a layout only when its height changes, and is always redrawn."""

from __future__ import annotations

import pytest
from textual._compositor import Compositor
from textual.app import App, ComposeResult

from chatui.widgets.chat_message import ReplyMarkdown, ReplyParagraph


class OneReply(App[None]):
    def compose(self) -> ComposeResult:
        yield ReplyMarkdown("Short words.")


async def test_words_that_fit_redraw_the_paragraph_without_a_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layouts = 0
    reflow = Compositor.reflow

    def counting_reflow(self, parent, size):  # type: ignore[no-untyped-def]
        nonlocal layouts
        layouts += 1
        return reflow(self, parent, size)

    monkeypatch.setattr(Compositor, "reflow", counting_reflow)
    app = OneReply()
    async with app.run_test(size=(40, 8)) as pilot:
        await pilot.pause()
        reply = app.query_one(ReplyMarkdown)
        paragraph = app.query_one(ReplyParagraph)
        assert paragraph.size.height == 1

        layouts = 0
        await reply.append(" Zebra")  # Still one line.
        await pilot.pause()
        assert layouts == 0
        assert "Zebra" in app.export_screenshot()  # Drawn all the same.

        await reply.append(" and then a great many more words that wrap")
        await pilot.pause()
        assert layouts >= 1  # Now it is taller: the screen is laid out again.
        assert paragraph.size.height == 2
        assert "wrap" in app.export_screenshot()

        layouts = 0
        await reply.append("\n\nA new paragraph.")  # A new block: a layout, as before.
        await pilot.pause()
        assert layouts >= 1
        assert len(app.query(ReplyParagraph)) == 2
