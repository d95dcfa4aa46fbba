"""The system prompt dialog: give the open conversation its own system prompt, or not.

A conversation answers with the config's system prompt until it is given
one of its own here; "Use the default" goes back to the config's. The
change applies from the next turn on: replies so far keep the prompt they
were written with.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea

from chatui._textual.footer import KeyFooter
from chatui.sanitize import visible


@dataclass(frozen=True)
class PromptChange:
    """What the dialog decided: the conversation's own prompt, or None for the config's."""

    text: str | None


class SystemPromptDialog(ModalScreen[PromptChange | None]):
    """Edit the open conversation's system prompt. Dismisses with a `PromptChange`, or None.

    The text area holds the prompt the next turn would send: the
    conversation's own, else the config's. Control characters in it (a
    prompt is text from outside: the config, a store another program wrote)
    are shown as visible stand-ins, never sent to the terminal; saved
    unedited, the prompt stays as it was, byte for byte. Saving the text
    unchanged changes nothing: the default does not become the
    conversation's own by a Ctrl+S.
    """

    DEFAULT_CSS = """
    SystemPromptDialog {
        align: center middle;
    }
    #system-prompt-dialog {
        width: 90%;
        max-width: 90;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #system-prompt-note {
        color: $text-muted;
        height: auto;
        margin: 0 0 1 0;
    }
    #system-prompt-text {
        height: 12;
        border: round $panel-lighten-2;
    }
    #system-prompt-text:focus {
        border: round $accent;
    }
    #system-prompt-buttons {
        height: auto;
        margin: 1 0 0 0;
    }
    #system-prompt-buttons Button {
        margin: 0 1 0 0;
    }
    """

    BINDINGS = [
        # Not a priority binding: Ctrl+S then reaches the text area behind the keys typed
        # before it (read with it, as a fast typist's or a paste's are), and bubbles up
        # from there once they are in the text. A priority one saved the text without them.
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, prompt: str, *, own: bool) -> None:
        """`prompt`: what the next turn sends; `own`: whether it is the conversation's."""
        super().__init__()
        self.prompt = prompt
        self.own = own
        self._shown = visible(prompt)  # What the text area starts with.

    def compose(self) -> ComposeResult:
        with Vertical(id="system-prompt-dialog") as dialog:
            dialog.border_title = "System prompt for this conversation"
            yield Static(Text(self._note()), id="system-prompt-note")
            yield TextArea(self._shown, id="system-prompt-text", soft_wrap=True)
            with Horizontal(id="system-prompt-buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Use the default", id="default", disabled=not self.own, compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield KeyFooter()

    def _note(self) -> str:
        whose = (
            "This conversation has its own system prompt."
            if self.own
            else "This conversation uses the default system prompt, from the config file."
        )
        return f"{whose} A change applies from the next reply on."

    def on_mount(self) -> None:
        text = self.query_one(TextArea)
        text.focus()
        text.move_cursor(text.document.end)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "default":
            self.dismiss(PromptChange(None))
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        """Ctrl+S: the text as the conversation's own (unchanged: nothing changes)."""
        text = self.query_one(TextArea).text
        self.dismiss(None if text == self._shown else PromptChange(text))
