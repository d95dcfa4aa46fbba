"""The multi-line prompt editor: Enter sends, Shift+Enter or Ctrl+J inserts a newline.

Up on an empty composer walks back through the conversation's earlier
prompts, as in a shell, and Down walks forward, back to what was being
written; the same walk shows a recalled prompt (Ctrl+R). Each step replaces
the text through the editor's own edits, so Ctrl+Z brings back what was
there: no key discards a draft. What was set aside for the walk also comes
back once the prompt is sent, and is kept with the draft meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from time import monotonic

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import Selection

NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")
BUSY_NOTICE = "A prompt was just sent: this text stays here. Press Enter again to send it next."


class Composer(TextArea):
    """Where the user writes a prompt.

    Enter sends the text and empties the composer in the same step, and the
    composer stays `locked` until the screen has taken that prompt (started
    its turn, or queued it behind the running one: `unlock()`; `restore()`
    puts back a prompt the screen did not take). While locked, Enter sends
    nothing and the text stays: keys that arrive in one read with the first
    Enter (a paste in a terminal without bracketed paste, a double Enter) can
    neither start a second turn nor be glued to the prompt that was sent.
    """

    # Ctrl+E edits the last prompt (the chat screen's); not the end of the line, which is End.
    BINDINGS = [Binding("ctrl+e", "screen.edit_prompt", "Edit the prompt", show=False)]

    @dataclass
    class Submitted(Message):
        text: str
        # When the Enter that sent it arrived (`Message.time`, Textual's monotonic clock).
        key_time: float = field(default_factory=monotonic)

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False)
        self.placeholder = "Message… (Enter sends, Shift+Enter or Ctrl+J for a new line)"
        self.locked = False
        self.prompts: list[str] = []  # The conversation's prompts, oldest first: Up's walk.
        self._walk: int | None = None  # Which of them is shown, while walking.
        self._shown = ""  # That prompt as the editor shows it (its line ends are the editor's).
        self._walk_draft = ""  # What was here when the walk began: Down ends there.

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
            text, self.locked, aside = self.text, True, self._aside()
            self.clear()
            self._walk = None
            if aside:
                self.insert(aside)  # Set aside for the prompt just sent: back in its place.
            self.post_message(self.Submitted(text, event.time))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)

    async def type_keys(self, keys: Iterable[events.Key | events.Paste]) -> None:
        """Type `keys` here, in order, as if they came now: text, pastes, new lines, editing keys.

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
            if isinstance(key, events.Paste):
                self.insert(key.text)
            elif key.key in NEWLINE_KEYS:
                self.insert("\n")
            elif key.key in actions:
                await self.run_action(actions[key.key])
            elif key.is_printable and key.character:
                self.insert(key.character)

    # The draft, and the walk through earlier prompts

    @property
    def draft(self) -> str:
        """What the user is writing, to keep: the text, and what a walk set aside.

        An earlier prompt shown unchanged is stored already: then it is only
        what was here before the walk. An edited one comes first, then that.
        """
        if self._showing_prompt():
            return self._walk_draft
        aside = self._aside()
        return f"{self.text}\n{aside}" if aside and self.text.strip() else aside or self.text

    def _aside(self) -> str:
        """What a walk (Up, Ctrl+R) set aside and is not back yet; empty if nothing."""
        walked = self._walk is not None and self.text != self._walk_draft
        return self._walk_draft if walked and self._walk_draft.strip() else ""

    def load_draft(self, draft: str, prompts: list[str]) -> None:
        """Show another conversation's `draft` and walk its `prompts` (its undo starts afresh)."""
        self.prompts = list(prompts)
        self._walk = None
        if draft != self.text:
            self.load_text(draft)
        self.move_cursor(self.document.end)

    def recall(self, prompt: str) -> None:
        """Show `prompt` to edit and send again, in place of the text, which stays recoverable.

        Ctrl+Z, or Down past the newest prompt, brings the text back.
        """
        if prompt in self.prompts:
            self._show_prompt(len(self.prompts) - 1 - self.prompts[::-1].index(prompt))
        else:
            self._walk = None
            self._replace_all(prompt)

    def put_back(self, text: str) -> None:
        """Show `text` again in place of what is here (an edit given up), as one undoable edit."""
        self._walk = None
        self._replace_all(text)

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self._walk_back():
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if not select and self._walk_forward():
            return
        super().action_cursor_down(select)

    def undo(self) -> None:
        """Undo; an undo back to the text from before a walk ends the walk (it is back)."""
        super().undo()
        if self._walk is not None and self.text == self._walk_draft:
            self._walk = None

    def _walk_back(self) -> bool:
        """Up: the prompt before, from an empty composer or an earlier prompt shown unchanged.

        In the latter, only from its first line: above it, Up moves the cursor.
        """
        if self._showing_prompt():
            assert self._walk is not None
            if self._walk == 0 or not self.navigator.is_first_wrapped_line(self.cursor_location):
                return False
            self._show_prompt(self._walk - 1)
            return True
        if self.text or not self.prompts:
            return False
        self._show_prompt(len(self.prompts) - 1)
        return True

    def _walk_forward(self) -> bool:
        """Down: the next prompt, and after the newest, the text from before the walk."""
        if not self._showing_prompt():
            return False
        assert self._walk is not None
        if not self.navigator.is_last_wrapped_line(self.cursor_location):
            return False
        if self._walk + 1 < len(self.prompts):
            self._show_prompt(self._walk + 1)
        else:
            self._walk = None
            self._replace_all(self._walk_draft)
        return True

    def _showing_prompt(self) -> bool:
        walk = self._walk
        return walk is not None and walk < len(self.prompts) and self.text == self._shown

    def _show_prompt(self, index: int) -> None:
        if not self._showing_prompt():
            self._walk_draft = self.text  # A walk begins: this is where Down ends.
        self._walk = index
        self._replace_all(self.prompts[index])
        self._shown = self.text

    def _replace_all(self, text: str) -> None:
        """Put `text` here as one edit of its own, so one Ctrl+Z takes it back."""
        if text != self.text:
            self.history.checkpoint()
            self.replace(text, (0, 0), self.document.end, maintain_selection_offset=False)
            self.history.checkpoint()
        self.move_cursor(self.document.end)

    def wants_key(self, key: str) -> bool:
        """Whether Home, End, PageUp or PageDown has work here, or may scroll the conversation.

        PageUp and PageDown page through a draft taller than the composer.
        Home and End are the draft's when they move the cursor, and in a draft
        of several lines also when they do not, unless the cursor is at its
        very start (Home) or end (End): a second Home in a one-line draft goes
        to the conversation's top, End at a draft's end follows the reply.
        """
        if key in ("pageup", "pagedown"):
            return self.max_scroll_y > 0
        if key == "home":
            target, edge = self.get_cursor_line_start_location(smart_home=True), (0, 0)
        else:
            target, edge = self.get_cursor_line_end_location(), self.document.end
        if self.selection != Selection.cursor(target):
            return True
        return self.document.line_count > 1 and self.cursor_location != edge

    def unlock(self) -> None:
        """Let Enter send again."""
        self.locked = False

    def restore(self, unsent: str) -> None:
        """Put back a prompt that was not sent, before whatever was typed since."""
        rest = self.text
        self.text = f"{unsent}\n{rest}" if rest.strip() else unsent
        self.move_cursor(self.document.end)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Ctrl+C copies a selection; with nothing selected it goes on to the app's
        # Ctrl+C (stop the reply, or say how to quit).
        if action == "copy":
            return bool(self.selected_text)
        return super().check_action(action, parameters)
