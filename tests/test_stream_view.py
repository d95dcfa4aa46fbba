"""A streamed reply shows every fragment it was given exactly once, even when the
stop lands on the very first token."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Markdown

from chatui.messages import ModelResponse
from chatui.widgets.chat_message import AssistantMessage


class OneReply(App[None]):
    def compose(self) -> ComposeResult:
        yield AssistantMessage(ModelResponse("p", "m"))


async def test_stop_at_any_token_loses_and_repeats_nothing() -> None:
    fragments = [f"word{i} " + ("\n\n" if i % 7 == 6 else "") for i in range(300)]
    for stop_after in (1, 2, 5, 50, 300):
        app = OneReply()
        async with app.run_test():
            view = app.query_one(AssistantMessage)
            for fragment in fragments[:stop_after]:
                await view.write(fragment)
            view.mark_stopped()  # Esc, possibly while the first append still runs.
            await view.write("late")
            await view.finish()

            shown = "".join(m.source for m in view.query(Markdown))
            assert shown == "".join(fragments[:stop_after])
            assert view.late_writes == 1
