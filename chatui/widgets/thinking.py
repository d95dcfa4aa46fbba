"""A model's reasoning, shown collapsed above its answer and never mixed into it.

The text is untrusted: it is shown as plain `Text` through `visible()`. While
the view is collapsed a streamed delta costs nothing but a title change on
the first one; the text is rendered when the user opens the view.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Collapsible, Static

from chatui.messages import ThinkingPart
from chatui.sanitize import visible


class ThinkingView(Collapsible):
    """One thinking part: "Thinking…" while it streams, then "Thought · N words"."""

    def __init__(self, part: ThinkingPart, *, streaming: bool = True) -> None:
        self._body = Static(classes="thinking-text")
        super().__init__(self._body, collapsed=True, classes="thinking")
        self.part = part
        self.streaming = streaming
        self._shown = -1  # Length of the part's text when the body was last updated.
        self.title = self._heading()

    def grow(self) -> None:
        """The part's text grew: show it if the view is open."""
        if not self.collapsed:
            self._show_text()

    def end(self) -> None:
        """The thinking is over (the answer started, or the reply ended)."""
        if self.streaming:
            self.streaming = False
            self.title = self._heading()

    def _heading(self) -> str:
        if self.part.redacted:
            return "Thinking (redacted by the provider)"
        if self.streaming:
            return "Thinking…"
        words = len(self.part.text.split())
        return f"Thought · {words} word{'' if words == 1 else 's'}"

    def _show_text(self) -> None:
        text = self.part.text
        if len(text) != self._shown:
            self._shown = len(text)
            if self.part.redacted:
                body = Text("Encrypted by the provider; sent back to it as received.", "italic")
            else:
                body = Text(visible(text))
            self._body.update(body)

    def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        if event.collapsible is self:
            self._show_text()
