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


def test_a_replys_header_names_its_provider_and_model() -> None:
    """A conversation can change provider and model: each reply says which wrote it."""

    def title(provider: str, model: str) -> str:  # Textual gives it back as markup.
        return AssistantMessage(ModelResponse(provider, model)).border_title

    assert title("openai", "gpt-x") == "openai · gpt-x"
    assert title("local", "") == "local"
    # The bracket escaped (shown, not parsed), the ESC made visible.
    assert title("anthropic", "[b]x\x1b[2J") == "anthropic · \\[b]x␛[2J"
