"""The approval dialog: may this tool call run? Once, for this conversation, or not at all.

The call's name and arguments come from the model: they are shown literally
(plain `Text` and `Content` through `visible()`, never markup). Enter on the
focused button answers; the focus starts on Deny, so an Enter meant for
something else never runs a command. Esc closes the dialog and stops the
turn (`on_stop`): the call does not run and is answered "cancelled by the user".

The user must be able to read all of what they approve, at any terminal size
from 40x12 up: the call wraps (nothing is cut off sideways), it scrolls with
Up/Down, PageUp/PageDown and Home/End while the focus stays on the buttons,
a line under it says how many lines are out of view (in rows, where a line
out of view is taller than the view), and the buttons always fit (with short
labels and no borders on a small terminal).

The dialog opens by itself, while the user may be typing the next prompt: a
key read from the terminal before the dialog was first drawn was meant for
the composer, so it answers nothing here (printable ones and a paste go to
the composer, through `on_early_key`). Only Esc acts whenever it was typed: it
stops the turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.widgets import Button, Static
from textual.widgets.button import ButtonVariant

from chatui._textual.first_draw import DrawnModalScreen
from chatui.messages import ToolCallPart
from chatui.sanitize import visible
from chatui.tools.protocol import Approval

# Below these sizes the dialog drops its padding, margins and button borders
# (short) and uses short button labels (narrow), so the buttons fit at 40x12.
TALL = 24
WIDE = 76

CONTINUED = "↪ "  # Marks a row that goes on from the row above.

# Each button's id (its answer), its look, its label, and its label on a narrow terminal.
BUTTONS: list[tuple[str, ButtonVariant, str, str]] = [
    ("once", "primary", "Approve once (y)", "Once (y)"),
    ("conversation", "default", "For this conversation (a)", "Chat (a)"),
    ("deny", "error", "Deny (n)", "Deny (n)"),
]


class CallView(VerticalScroll, can_focus=False):
    """The call's text, scrolled by the dialog's keys; says how much of it is out of view.

    It wraps the text itself, to the view's width, so that a row that goes on
    from the row above is marked (`↪`) and not read as a line of its own, and
    so that it knows which line each row belongs to: what is out of view is
    counted in the call's lines, not in rows; but in rows on a side where a
    line out of view is taller than the view (one line of 5,000 characters
    is not "1 more line"). Not focusable: the focus stays on the buttons,
    where Enter is safe.
    """

    class Hidden(Message):
        """How much of the call is above and below the view: lines (wholly or in part), or rows."""

        def __init__(
            self,
            above: int,
            below: int,
            *,
            above_in_rows: bool = False,
            below_in_rows: bool = False,
        ) -> None:
            super().__init__()
            self.above = above
            self.below = below
            self.above_in_rows = above_in_rows
            self.below_in_rows = below_in_rows

    def __init__(self, text: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines = text.expandtabs(8).split("\n")
        self._line_of_row = list(range(len(self._lines)))  # Until it is wrapped.
        self._rows_of_line = [1] * len(self._lines)
        self._wrapped_at = 0  # The width it was wrapped to.

    def compose(self) -> ComposeResult:
        # Textual wraps it until the view knows its width and wraps it itself.
        yield Static(Content("\n".join(self._lines)))

    def on_resize(self, event: events.Resize) -> None:
        """The view or its text changed size (the text's new height comes as a resize too)."""
        width = self.scrollable_content_region.width
        if width > len(CONTINUED) and width != self._wrapped_at:
            self._wrapped_at = width
            self._wrap(width - len(CONTINUED))
        self._report()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._report()

    def _wrap(self, width: int) -> None:
        rows: list[Content] = []
        self._line_of_row, self._rows_of_line = [], []
        for number, line in enumerate(self._lines):
            first, *rest = Content(line).wrap(width)
            rows += [first, *(Content.styled(CONTINUED, "dim") + row for row in rest)]
            self._line_of_row += [number] * (1 + len(rest))
            self._rows_of_line.append(1 + len(rest))
        self.query_one(Static).update(Content("\n").join(rows))

    def _report(self) -> None:
        top, height = round(self.scroll_y), self.scrollable_content_region.height
        bottom = min(top + height, len(self._line_of_row)) - 1
        if bottom < top:
            return  # Not laid out yet.
        rows, lines = self._line_of_row, len(self._lines)
        first, last = rows[top], rows[bottom]
        above = first + (top > 0 and rows[top - 1] == first)  # Its top cut off: not seen whole.
        below = lines - 1 - last + (bottom + 1 < len(rows) and rows[bottom + 1] == last)
        above_in_rows = any(self._rows_of_line[n] > height for n in range(above))
        below_in_rows = any(self._rows_of_line[n] > height for n in range(lines - below, lines))
        self.post_message(
            self.Hidden(
                top if above_in_rows else above,
                len(rows) - 1 - bottom if below_in_rows else below,
                above_in_rows=above_in_rows,
                below_in_rows=below_in_rows,
            )
        )


def fit(size: Size) -> tuple[bool, bool]:
    """Whether a terminal of `size` is narrow (short labels) and short (borderless buttons)."""
    return size.width < WIDE, size.height < TALL


def hidden_lines(
    above: int, below: int, *, above_in_rows: bool = False, below_in_rows: bool = False
) -> str:
    """What is out of view, as `↑ 3 lines above · ↓ 29 more lines`; empty when nothing is.

    A side `…_in_rows` counts rows instead (`↓ 150 more rows`).
    """
    parts = []
    if above:
        parts.append(f"↑ {above} {_unit(above, 'row' if above_in_rows else 'line')} above")
    if below:
        parts.append(f"↓ {below} more {_unit(below, 'row' if below_in_rows else 'line')}")
    return " · ".join(parts)


def _unit(count: int, unit: str) -> str:
    return unit if count == 1 else f"{unit}s"


class ApprovalDialog(DrawnModalScreen[Approval | None]):
    """Ask about one call; dismisses with the `Approval`, or None when Esc stopped the turn."""

    # The name docks at the top and the buttons at the bottom, so that the call
    # takes only the rows it needs, and at most the rows the screen has left.
    DEFAULT_CSS = """
    ApprovalDialog {
        align: center middle;
    }
    ApprovalDialog #approval-dialog {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 90%;
        padding: 1 2;
        border: round $warning;
        border-title-color: $warning;
        background: $surface;
    }
    ApprovalDialog #approval-tool {
        dock: top;
        padding: 0 0 1 0;
    }
    ApprovalDialog #approval-arguments {
        height: auto;
        max-height: 100%;
        padding: 0 1;
        background: $boost;
        scrollbar-size-vertical: 1;
    }
    ApprovalDialog #approval-answers {
        dock: bottom;
        height: auto;
    }
    ApprovalDialog #approval-hidden {
        width: 100%;
        text-align: right;
        color: $text-muted;
    }
    ApprovalDialog #approval-buttons {
        height: auto;
        align: center middle;
        margin: 1 0 0 0;
    }
    ApprovalDialog #approval-buttons Button {
        margin: 0 1;
    }
    ApprovalDialog #approval-dialog.-short {
        max-height: 100%;
        padding: 0 1;
        #approval-tool {
            padding: 0;
        }
        #approval-buttons {
            margin: 0;
        }
    }
    ApprovalDialog #approval-dialog.-narrow #approval-buttons Button {
        min-width: 0;
        margin: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape", "stop", "Stop the reply"),
        Binding("y", "answer('once')", "Approve once"),
        Binding("a", "answer('conversation')", "Approve for this conversation"),
        Binding("n", "answer('deny')", "Deny"),
        Binding("up", "scroll('up')", "Scroll up", show=False),
        Binding("down", "scroll('down')", "Scroll down", show=False),
        Binding("pageup", "scroll('page_up')", "Page up", show=False),
        Binding("pagedown", "scroll('page_down')", "Page down", show=False),
        Binding("home", "scroll('home')", "Top", show=False),
        Binding("end", "scroll('end')", "Bottom", show=False),
    ]

    def __init__(
        self,
        call: ToolCallPart,
        on_stop: Callable[[float | None], None],
        on_early_key: Callable[[events.Key | events.Paste], None] = lambda key: None,
        *,
        server: str = "",
        tool: str = "",
    ) -> None:
        """`on_stop(key_time)` stops the turn (its task then closes this dialog).

        `on_early_key(key)` takes a key (not Esc) or a paste that reached the
        dialog but was read before the dialog was on screen. `server` and
        `tool`: an MCP tool's server, and the server's own name for the tool
        (the call's name is made to fit the APIs, and may be cut and hashed).
        """
        super().__init__()
        self.call = call
        self._on_stop = on_stop
        self._on_early_key = on_early_key
        self._server = server
        self._tool = tool

    def compose(self) -> ComposeResult:
        narrow, short = fit(self.app.size)
        with Vertical(id="approval-dialog") as dialog:
            dialog.set_class(narrow, "-narrow").set_class(short, "-short")
            dialog.border_title = "Allow this tool call?"
            name = Text("The model wants to run ")
            name.append(visible(self.call.name), style="bold")
            if self._server:
                name.append(f"\n(the tool {_cut(self._tool)} of the MCP server ", style="dim")
                name.append(visible(self._server), style="dim bold")
                name.append(")", style="dim")
            yield Static(name, id="approval-tool")
            yield CallView(
                visible(describe_arguments(self.call.arguments)), id="approval-arguments"
            )
            with Vertical(id="approval-answers"):
                yield Static(id="approval-hidden")
                with Horizontal(id="approval-buttons"):
                    for answer, variant, label, short_label in BUTTONS:
                        shown = short_label if narrow else label
                        yield Button(shown, id=answer, variant=variant, compact=short)

    def on_mount(self) -> None:
        self.query_one("#deny", Button).focus()

    def on_resize(self, event: events.Resize) -> None:
        """Short labels and borderless buttons where the full ones would not fit."""
        narrow, short = fit(event.size)
        for dialog in self.query("#approval-dialog"):  # None yet while it is being composed.
            dialog.set_class(narrow, "-narrow").set_class(short, "-short")
        labels = {
            answer: short_label if narrow else label for answer, _, label, short_label in BUTTONS
        }
        for button in self.query(Button):
            button.label = labels[button.id or ""]
            button.compact = short

    def on_call_view_hidden(self, event: CallView.Hidden) -> None:
        shown = self.query_one("#approval-hidden", Static)
        text = hidden_lines(
            event.above,
            event.below,
            above_in_rows=event.above_in_rows,
            below_in_rows=event.below_in_rows,
        )
        shown.update(text)
        shown.display = bool(text)

    def ready(self) -> bool:
        """Shown once its buttons are: `shown_at` is when they first reached the terminal."""
        deny = self.query("#deny")  # None yet while the screen is being composed.
        return bool(deny) and bool(deny.first().region)

    def on_key(self, event: events.Key) -> None:
        """Keep a key read before the dialog was shown from answering it (or moving its focus).

        It reaches the screen on its way from the focused button to the App,
        which runs the bindings (Enter on a button, y, a, n) last; stopped
        here, none of them runs.
        """
        if event.key == "escape" or self.shown_before(event.time):
            return
        event.stop()
        event.prevent_default()
        self._on_early_key(event)

    def on_paste(self, event: events.Paste) -> None:
        """A paste read before the dialog was shown was meant for the composer, as a key is."""
        if not self.shown_before(event.time):
            event.stop()
            event.prevent_default()
            self._on_early_key(event)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_answer(event.button.id or "deny")

    def action_answer(self, answer: str) -> None:
        self.dismiss(Approval(answer))

    def action_scroll(self, where: str) -> None:
        """Scroll the call's text; the focus stays where it is."""
        view = self.query_one(CallView)
        {
            "up": view.scroll_up,
            "down": view.scroll_down,
            "page_up": view.scroll_page_up,
            "page_down": view.scroll_page_down,
            "home": view.scroll_home,
            "end": view.scroll_end,
        }[where](animate=False)

    def action_stop(self) -> None:
        self.stop_for_escape(None)

    def stop_for_escape(self, key_time: float | None) -> bool:
        """Esc: stop the turn, which closes this dialog (the app's quick Esc path too)."""
        self._on_stop(key_time)
        return True


def describe_arguments(arguments: str) -> str:
    """The arguments one to a line (`name: value`), strings as they are; else the raw text.

    Of two or more arguments, a value's own lines after its first are
    indented, so that a line of a value ("notes.txt\\npath: x") never passes
    for an argument of its own; a key that is not a plain word is quoted. One
    argument (a shell's command) is shown as it is: every line is its own.
    """
    try:
        values: Any = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
    if not isinstance(values, dict):
        return arguments
    if not values:
        return "(no arguments)"
    lines = []
    for key, value in values.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(values) > 1:
            shown = shown.replace("\n", "\n" + ARGUMENT_INDENT)
        lines.append(f"{_key(key)}: {shown}")
    return "\n".join(lines)


ARGUMENT_INDENT = "  "  # Before each line of a value after its first (of two or more arguments).
TOOL_NAME_CHARS = 128  # Of an MCP tool's own name, at most this much is shown.


def _key(key: str) -> str:
    """An argument's name as shown: as it is if a plain word, else quoted as JSON."""
    plain = key.isprintable() and not any(char in key for char in ' :"')
    return key if key and plain else json.dumps(key, ensure_ascii=False)


def _cut(name: str) -> str:
    """An MCP server's name for its tool: untrusted, literal, and at most a line or two."""
    shown = visible(name)
    return shown if len(shown) <= TOOL_NAME_CHARS else shown[: TOOL_NAME_CHARS - 1] + "…"
