"""The messages queued while a reply streams, shown between the conversation and the composer.

Each queued message is one line, "◷ Queued: " and its first line, with a ✕
at the end: a click on the ✕ takes the message back into the composer (a
queued message is never thrown away: cleared there, it is gone). A last line
says what happens to them: sent when the reply completes, or, when nothing
will send them by themselves (after a stop, a failure, a restart), which keys
send or edit them. The text is the user's own, shown literally all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.widget import Widget

from chatui.messages import QueuedMessage
from chatui.sanitize import visible

PREFIX = "◷ Queued: "
REMOVE = " ✕"
SHOWN = 3  # Queued messages shown one a line; the others are counted.


def hint(count: int, *, waiting: bool) -> str:
    """The line under `count` queued messages: when they go, or how to send them."""
    if waiting:
        return "Sent when the reply completes (Esc keeps them here)"
    if count == 1:
        return "Not sent: Ctrl+S sends it now · Ctrl+E edits it"
    return "Not sent: Ctrl+S sends the first now · Ctrl+E edits the last"


def first_line(text: str) -> str:
    """The message's first line with text, marked "…" when more follows.

    Its tabs are spaces: the line is cut to the panel's width by its cells,
    and a tab, which the terminal widens, would push the ✕ out of sight.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    head = lines[0].strip().expandtabs(4) if lines else ""
    return f"{head}…" if len(lines) > 1 else head


class QueuePanel(Widget):
    """The open conversation's queued messages, or nothing (hidden) when none are."""

    DEFAULT_CSS = """
    QueuePanel {
        height: auto;
        padding: 0 1 0 2;
        color: $text-muted;
        display: none;
    }
    QueuePanel.-shown {
        display: block;
    }
    """

    @dataclass
    class TakeBack(Message):
        """The ✕ of a queued message was clicked: take it back into the composer."""

        message_id: str

    def __init__(self) -> None:
        super().__init__(id="queue")
        self.messages: tuple[QueuedMessage, ...] = ()
        self.waiting = False

    def show(self, messages: Sequence[QueuedMessage], *, waiting: bool) -> None:
        """Show `messages`, first queued first; `waiting`: a turn runs that sends them after it."""
        self.messages, self.waiting = tuple(messages), waiting
        self.set_class(bool(self.messages), "-shown")
        self.refresh(layout=True)

    @property
    def lines(self) -> list[str]:
        """The panel's lines as plain text, as they read."""
        return self.render().plain.splitlines()

    def render(self) -> Text:
        width = max(self.content_size.width, 24)
        text = Text(no_wrap=True, overflow="ellipsis")
        shown = self.messages[:SHOWN]
        for message in shown:
            line = Text(PREFIX, style="bold")
            room = width - cell_len(PREFIX) - cell_len(REMOVE)
            body = Text(visible(first_line(message.text)))
            body.truncate(max(room, 1), overflow="ellipsis", pad=True)
            line.append_text(body)
            line.append(REMOVE, style="bold red")
            text.append_text(line)
            text.append("\n")
        if (more := len(self.messages) - len(shown)) > 0:
            text.append(f"   and {more} more queued\n")
        text.append(hint(len(self.messages), waiting=self.waiting), style="italic")
        return text

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if not self.messages:
            return 0
        return min(len(self.messages), SHOWN) + (len(self.messages) > SHOWN) + 1

    def on_click(self, event: events.Click) -> None:
        """A click on a message's ✕: ask the screen to take it back into the composer."""
        row, width = event.y - self.gutter.top, self.content_size.width
        x = event.x - self.gutter.left
        if 0 <= row < min(len(self.messages), SHOWN) and x >= width - cell_len(REMOVE):
            event.stop()
            self.post_message(self.TakeBack(self.messages[row].id))
