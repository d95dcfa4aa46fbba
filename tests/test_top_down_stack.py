"""A reply's parts are arranged once per layout, exactly as Textual would arrange them.

A canary of Textual's internals: `chatui/_textual/top_down.py` relies on how
Textual caches arrangements, and these tests fail if that changes.
"""

from __future__ import annotations

import pytest
import textual.widget
from textual._arrange import arrange
from textual._compositor import Compositor
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.widget import Widget

from chatui._textual.frame_clock import draw_now
from chatui.messages import ModelResponse, ResponseState, ToolCallPart
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.reply_markdown import ReplyMarkdown

EVERY_BLOCK = """\
# A heading

A paragraph that is long enough to wrap onto a second line at this width, surely.

- a list item
- another, with `code`

1. numbered
2. items

> a quote

```python
print("a fence")
```

| a | table |
|---|-------|
| 1 | 2     |

---

The end.
"""


def every_part() -> ModelResponse:
    response = ModelResponse("scripted", "script-1", state=ResponseState.INTERRUPTED)
    response.append_text(EVERY_BLOCK)
    response.parts.append(ToolCallPart("call-1", "read_file", '{"path": "a.txt"}', True))
    response.append_text("After the call.")
    return response


class RichReply(App[None]):
    CSS_PATH = "../chatui/app.tcss"

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield AssistantMessage(every_part(), streaming=False)


async def test_the_arrangement_is_textuals_at_every_height() -> None:
    app = RichReply()
    async with app.run_test(size=(60, 30)) as pilot:
        await pilot.pause()
        view = app.query_one(AssistantMessage)
        stacks: list[Widget] = [view, *view.query(ReplyMarkdown)]
        assert len(stacks) == 3
        for stack in stacks:
            width, height = stack.content_region.size
            assert height > 1
            for asked in (0, 1, height, 2 * height):
                ours = stack.arrange(Size(width, asked))
                textuals = arrange(stack, stack._nodes, Size(width, asked), app.size)
                assert ours.placements == textuals.placements
                assert ours.total_region == textuals.total_region


async def test_a_layout_arranges_each_part_of_a_reply_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arranged: list[Widget | None] = []  # None: a layout of the screen starts.
    reflow = Compositor.reflow

    def counting_reflow(self, parent, size):  # type: ignore[no-untyped-def]
        arranged.append(None)
        return reflow(self, parent, size)

    def counting_arrange(widget, *args, **kwargs):  # type: ignore[no-untyped-def]
        arranged.append(widget)
        return arrange(widget, *args, **kwargs)

    monkeypatch.setattr(Compositor, "reflow", counting_reflow)
    monkeypatch.setattr(textual.widget, "arrange", counting_arrange)
    app = RichReply()
    async with app.run_test(size=(60, 30)) as pilot:
        await pilot.pause()
        view = app.query_one(AssistantMessage)
        last = view.query(ReplyMarkdown).last()
        draw_now(app.screen)
        arranged.clear()
        height = last.size.height
        await last.append(" More words, and a few more, enough to wrap onto another line.")
        await pilot.pause()
        draw_now(app.screen)
        assert last.size.height > height
        layouts = " ".join(
            "|" if w is None else "view" if w is view else "last" if w is last else "other"
            for w in arranged
        ).split("|")
        arranging_the_reply = [layout.split() for layout in layouts if "view" in layout]
        assert arranging_the_reply  # At least one layout arranged the reply,
        for layout in arranging_the_reply:  # and each did so once.
            assert layout.count("view") == 1
            assert layout.count("last") == 1
