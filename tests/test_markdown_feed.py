"""The Markdown feed shows every streamed fragment exactly once, however it is stopped."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Markdown

from chatui.widgets.chat_message import MarkdownFeed


class OneMarkdown(App[None]):
    def compose(self) -> ComposeResult:
        yield Markdown()


async def test_stop_while_an_append_is_in_flight_loses_and_repeats_nothing() -> None:
    fragments = [f"word{i} " + ("\n\n" if i % 7 == 6 else "") for i in range(300)]
    app = OneMarkdown()
    async with app.run_test():
        markdown = app.query_one(Markdown)
        for stop_after in (1, 2, 5, 50, 300):
            await markdown.update("")
            feed = MarkdownFeed(markdown)
            for fragment in fragments[:stop_after]:
                await feed.write(fragment)
            await feed.stop()  # Often while the first append is still running.

            assert markdown.source == "".join(fragments[:stop_after])
