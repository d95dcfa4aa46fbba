"""One tool call inside a reply: its name, its arguments as they stream, its status, its result.

The status line says where the call is: its arguments streaming, waiting for
the user's approval, running, done, failed, denied, cancelled, or cut off
(its arguments never ended, so it was never run). A result of a few lines is
shown whole; a longer one is collapsed under a title giving its size.

Everything here comes from outside (the model's names and arguments, a
tool's output): it is shown as plain `Text` through `visible()`, never as
markup, and terminal control sequences are shown, not acted on.
"""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Static

from chatui.messages import ToolCallPart, ToolResult
from chatui.sanitize import visible

SHORT_LINES = 4  # A result up to this many lines (and SHORT_CHARS characters) is shown open.
SHORT_CHARS = 320

Status = Literal[
    "streaming", "called", "approval", "running", "done", "failed", "denied", "cancelled", "cut off"
]

_LABELS: dict[Status, tuple[str, str]] = {
    "streaming": ("…", "writing the call"),
    "called": ("·", "called"),
    "approval": ("?", "waiting for your approval"),
    "running": ("▶", "running"),
    "done": ("✓", "done"),
    "failed": ("✗", "failed"),
    "denied": ("⊘", "denied"),
    "cancelled": ("■", "cancelled by you"),
    "cut off": ("✂", "cut off before its arguments ended: not run"),
}
_RESULT_STATUS: dict[str, Status] = {
    "ok": "done",
    "error": "failed",
    "denied": "denied",
    "cancelled": "cancelled",
}


class ToolCallView(Vertical):
    """One tool call; `status` is one of `Status`, shown as the view's class too."""

    def __init__(self, call: ToolCallPart) -> None:
        super().__init__(classes="tool-call")
        self.call = call
        self.result: ToolResult | None = None
        self.status: Status = "called" if call.complete else "streaming"
        self._head = Static(classes="tool-head")
        self._arguments = Static(classes="tool-arguments")
        self._result_area = Vertical(classes="tool-result")
        self._shown_arguments = -1

    def compose(self) -> ComposeResult:
        yield self._head
        yield self._arguments
        yield self._result_area

    def on_mount(self) -> None:
        self._show_head()
        self.show_arguments()
        if self.result is not None:
            self._show_result()

    def show_arguments(self) -> None:
        """The arguments grew (or the call ended): show them as they are so far."""
        arguments = self.call.arguments
        if len(arguments) != self._shown_arguments:
            self._shown_arguments = len(arguments)
            shown = arguments or ("{}" if self.call.complete else "")
            self._arguments.update(Text(visible(shown)))
        if self.call.complete and self.status == "streaming":
            self.set_status("called")

    def set_status(self, status: Status) -> None:
        if status != self.status:
            self.remove_class(f"-{self.status.replace(' ', '-')}")
            self.status = status
            self._show_head()

    def cut_off(self) -> None:
        """The reply ended (or was stopped) with this call's arguments unfinished."""
        if not self.call.complete:
            self.set_status("cut off")

    def show_result(self, result: ToolResult) -> None:
        self.result = result
        self.set_status(_RESULT_STATUS[result.state])
        if self.is_mounted:
            self._show_result()

    def _show_head(self) -> None:
        mark, words = _LABELS[self.status]
        head = Text()
        head.append(f"{mark} ", style="bold")
        head.append(visible(self.call.name) or "(no name yet)", style="bold")
        head.append(f"  {words}", style="italic")
        self.add_class(f"-{self.status.replace(' ', '-')}")
        self._head.update(head)

    def _show_result(self) -> None:
        assert self.result is not None
        content = visible(self.result.content)
        lines = content.count("\n") + 1
        self._result_area.remove_children()
        if lines <= SHORT_LINES and len(content) <= SHORT_CHARS:
            self._result_area.mount(Static(Text(content), classes="tool-output"))
        else:
            title = f"Result · {lines} line{'' if lines == 1 else 's'}, {len(content):,} characters"
            body = Static(Text(content), classes="tool-output")
            self._result_area.mount(Collapsible(body, title=title, collapsed=True))
