"""The multi-line prompt editor: Enter sends, Shift+Enter or Ctrl+J inserts a newline."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")


class Composer(TextArea):
    """Where the user writes a prompt."""

    @dataclass
    class Submitted(Message):
        text: str

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False)
        self.placeholder = "Message… (Enter sends, Shift+Enter or Ctrl+J for a new line)"

    def on_mount(self) -> None:
        self.cursor_blink = not self.app.is_headless  # Steady frames for snapshots.

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if self.text.strip():
                self.post_message(self.Submitted(self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Ctrl+C copies a selection; with nothing selected it falls through to quit.
        if action == "copy":
            return bool(self.selected_text)
        return super().check_action(action, parameters)
