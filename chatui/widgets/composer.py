"""The multi-line prompt editor: Enter sends, Shift+Enter or Ctrl+J inserts a newline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from time import monotonic

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")
BUSY_NOTICE = "A reply is on its way: Esc stops it. Your text stays here until then."


class Composer(TextArea):
    """Where the user writes a prompt.

    Enter sends the text and empties the composer in the same step, and the
    composer stays `locked` until the screen is done with that prompt
    (`unlock()`; `restore()` puts back a prompt the screen did not take).
    While locked, Enter sends nothing and the text stays: keys that arrive in
    one read with the first Enter (a paste in a terminal without bracketed
    paste, a double Enter) can neither start a second turn nor be glued to the
    prompt that was sent.
    """

    @dataclass
    class Submitted(Message):
        text: str
        # When the Enter that sent it arrived (`Message.time`, Textual's monotonic clock).
        key_time: float = field(default_factory=monotonic)

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False)
        self.placeholder = "Message… (Enter sends, Shift+Enter or Ctrl+J for a new line)"
        self.locked = False

    def on_mount(self) -> None:
        self.cursor_blink = not self.app.is_headless  # Steady frames for snapshots.

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if not self.text.strip():
                return
            if self.locked:
                self.notify(BUSY_NOTICE, severity="warning", markup=False)
                return
            text, self.locked = self.text, True
            self.clear()
            self.post_message(self.Submitted(text, event.time))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)

    async def type_keys(self, keys: Iterable[events.Key]) -> None:
        """Type `keys` here, in order, as if they came now: text, new lines, editing keys.

        For keys typed while something else held the keyboard (a dialog that
        opened on its own). Enter is left out: it was not meant to send.
        """
        actions = {
            name.strip(): binding.action
            for cls in reversed(type(self).__mro__)
            for binding in getattr(cls, "BINDINGS", ())
            if isinstance(binding, Binding)
            for name in binding.key.split(",")
        }
        for key in keys:
            if key.key in NEWLINE_KEYS:
                self.insert("\n")
            elif key.key in actions:
                await self.run_action(actions[key.key])
            elif key.is_printable and key.character:
                self.insert(key.character)

    def unlock(self) -> None:
        """Let Enter send again."""
        self.locked = False

    def restore(self, unsent: str) -> None:
        """Put back a prompt that was not sent, before whatever was typed since."""
        rest = self.text
        self.text = f"{unsent}\n{rest}" if rest.strip() else unsent
        self.move_cursor(self.document.end)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Ctrl+C copies a selection; with nothing selected it falls through to quit.
        if action == "copy":
            return bool(self.selected_text)
        return super().check_action(action, parameters)
