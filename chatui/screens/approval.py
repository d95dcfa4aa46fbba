"""The approval dialog: may this tool call run? Once, for this conversation, or not at all.

The call's name and arguments come from the model: they are shown literally
(plain `Text` through `visible()`). Enter on the focused button answers; the
focus starts on Deny, so an Enter meant for something else never runs a
command. Esc closes the dialog and stops the turn (`on_stop`): the call does
not run and is answered "cancelled by the user".

The dialog opens by itself, while the user may be typing the next prompt: a
key read from the terminal before the dialog was first drawn was meant for
the composer, so it answers nothing here (printable ones go to the composer,
through `on_early_key`). Only Esc acts whenever it was typed: it stops the turn.
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
from textual.widgets import Button, Static

from chatui._textual.first_draw import DrawnModalScreen
from chatui.messages import ToolCallPart
from chatui.sanitize import visible
from chatui.turn import Approval


class ApprovalDialog(DrawnModalScreen[Approval | None]):
    """Ask about one call; dismisses with the `Approval`, or None when Esc stopped the turn."""

    BINDINGS = [
        Binding("escape", "stop", "Stop the reply"),
        Binding("y", "answer('once')", "Approve once"),
        Binding("a", "answer('conversation')", "Approve for this conversation"),
        Binding("n", "answer('deny')", "Deny"),
    ]

    def __init__(
        self,
        call: ToolCallPart,
        on_stop: Callable[[float | None], None],
        on_early_key: Callable[[events.Key], None] = lambda key: None,
    ) -> None:
        """`on_stop(key_time)` stops the turn (its task then closes this dialog).

        `on_early_key(key)` takes a key that reached the dialog but was read
        before the dialog was on screen (not Esc).
        """
        super().__init__()
        self.call = call
        self._on_stop = on_stop
        self._on_early_key = on_early_key

    def compose(self) -> ComposeResult:
        with Vertical(id="approval-dialog") as dialog:
            dialog.border_title = "Allow this tool call?"
            name = Text("The model wants to run ")
            name.append(visible(self.call.name), style="bold")
            yield Static(name, id="approval-tool")
            with VerticalScroll(id="approval-arguments"):
                yield Static(Text(visible(describe_arguments(self.call.arguments))))
            with Horizontal(id="approval-buttons"):
                yield Button("Approve once (y)", id="once", variant="primary")
                yield Button("For this conversation (a)", id="conversation")
                yield Button("Deny (n)", id="deny", variant="error")

    def on_mount(self) -> None:
        self.query_one("#deny", Button).focus()

    def ready(self) -> bool:
        """Shown once its buttons are: `shown_at` is when they first reached the terminal."""
        return bool(self.query_one("#deny", Button).region)

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

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_answer(event.button.id or "deny")

    def action_answer(self, answer: str) -> None:
        self.dismiss(Approval(answer))

    def action_stop(self) -> None:
        self.stop_for_escape(None)

    def stop_for_escape(self, key_time: float | None) -> bool:
        """Esc: stop the turn, which closes this dialog (the app's quick Esc path too)."""
        self._on_stop(key_time)
        return True


def describe_arguments(arguments: str) -> str:
    """The arguments one to a line (`name: value`), strings as they are; else the raw text."""
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
        lines.append(f"{key}: {shown}")
    return "\n".join(lines)
