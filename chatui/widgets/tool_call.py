"""One tool call inside a reply: its name, its arguments as they stream, its status, its result.

The status line says where the call is: its arguments streaming, waiting for
the user's approval, running, done, failed, denied, cancelled, or cut off
(its arguments never ended, so it was never run). A result of a few lines is
shown whole; a longer one is collapsed under a title giving its size.

Everything here comes from outside (the model's names and arguments, a
tool's output): it is shown as plain `Text` through `visible()`, never as
markup, and terminal control sequences are shown, not acted on.

Long arguments stream in pieces: drawing them whole on every delta made a
call's arguments cost time in the square of their length. Past `PIECE`
characters their start is cut off into a piece drawn once, where the cut
shows the same lines (after a line break, or where the text wraps at the
view's width), and each delta draws only the open piece. When the arguments
end (or are cut off), they are drawn whole again, once.

A running call whose tool reports its progress (an MCP server's
`notifications/progress`) shows a bar under its arguments: filled to the
fraction when the tool gives a total, else a marker that moves with each
report, beside the count. A server may report hundreds of times a second,
so the bar is one line of fixed height, repainted in place, never laid out
again. From the stop on, nothing moves it: it shows how far the call got.
An MCP call stopped while it ran says, once the server was told, that the
cancel was sent to it.
"""

from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual import events
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Collapsible, Static

from chatui.messages import ToolCallPart, ToolResult
from chatui.sanitize import one_line, visible
from chatui.tools.protocol import ToolProgress
from chatui.widgets.fold import Fold

SHORT_LINES = 4  # A result up to this many lines (and SHORT_CHARS characters) is shown open.
SHORT_CHARS = 320
PIECE = 1_000  # Characters: streaming arguments longer than this are drawn in pieces.
BAR_WIDTH = 20  # Cells of the progress bar.
PULSE = 4  # Cells of the marker that moves along the bar when the tool gives no total.
MESSAGE_CHARS = 300  # Of a progress message, at most this much is kept (one line shows).

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


class ProgressLine(Widget):
    """A running call's progress on one line: the bar, how far, the tool's own message.

    One line high whatever it shows, so an update repaints it and lays
    nothing out. The message is the tool's text: shown literally, on one line.
    """

    DEFAULT_CSS = """
    ProgressLine {
        height: 1;
        padding: 0 0 0 2;
        color: $text-muted;
        display: none;
    }
    ProgressLine > .progress--bar {
        color: $accent;
    }
    ProgressLine > .progress--rest {
        color: $foreground-disabled;
    }
    """
    COMPONENT_CLASSES = {"progress--bar", "progress--rest"}

    def __init__(self) -> None:
        super().__init__(classes="tool-progress")
        self.progress: ToolProgress | None = None
        self.reports = 0  # How many reports it has shown: where the marker is without a total.
        self._message = ""

    def show(self, progress: ToolProgress) -> None:
        """Show `progress`; the first report makes the line visible (the one layout)."""
        self.progress = progress
        self.reports += 1
        message = progress.message or ""
        self._message = one_line(message, MESSAGE_CHARS)
        if not self.display:
            self.display = True
        else:
            self.refresh()

    def render(self) -> RenderResult:
        progress = self.progress
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        if progress is None:
            return line
        bar = self.get_component_rich_style("progress--bar")
        rest = self.get_component_rich_style("progress--rest")
        fraction = progress.fraction
        if fraction is not None:
            filled = _short_of_full(fraction, BAR_WIDTH)
            line.append("━" * filled, style=bar)
            line.append("━" * (BAR_WIDTH - filled), style=rest)
            percent = _short_of_full(fraction, 100)
            line.append(f" {percent:3d}%  {_number(progress.done)}/{_number(progress.total)}")
        else:  # No total: a marker that moves one step a report, and the count.
            start = (self.reports - 1) % (BAR_WIDTH - PULSE + 1)
            line.append("━" * start, style=rest)
            line.append("━" * PULSE, style=bar)
            line.append("━" * (BAR_WIDTH - PULSE - start), style=rest)
            line.append(f"  {_number(progress.done)}")
        if self._message:
            line.append(f" · {self._message}")
        return line


def _short_of_full(fraction: float, whole: int) -> int:
    """`fraction` of `whole`, rounded; never all of it before the end (1999 of 2000 is 99%)."""
    part = round(fraction * whole)
    return whole - 1 if part == whole and fraction < 1 else part


def _number(value: float | None) -> str:
    """A count as a tool gives it: 3, 2.5, 1e+06."""
    return "?" if value is None else f"{value:g}"


class ToolCallView(Vertical):
    """One tool call; `status` is one of `Status`, shown as the view's class too."""

    def __init__(self, call: ToolCallPart) -> None:
        super().__init__(classes="tool-call")
        self.call = call
        self.result: ToolResult | None = None
        self.status: Status = "called" if call.complete else "streaming"
        self._head = Static(classes="tool-head")
        # Long arguments' pieces (those far above the view folded), while they stream.
        self._fold = Fold()
        self._pieces_box = Vertical(self._fold.spacer, classes="tool-argument-pieces")
        self._pieces_box.styles.height = "auto"
        self._pieces: list[Static] = []
        self._cut_at_width = 0  # The width they were cut at.
        # The arguments, or their open piece: the text after the pieces.
        self._arguments = Static(classes="tool-arguments")
        self._open = ""  # The text it shows.
        self._next_cut = PIECE  # How long it grows before a piece is cut off it.
        self._shown_arguments = -1  # How many characters of the arguments are shown.
        self._result_area = Vertical(classes="tool-result")
        self.progress_line = ProgressLine()
        self.progress_frozen = False  # Stopped: no report moves the bar any more.
        self._cancel_note = ""  # An MCP call's: where its cancel went ("cancel sent to X").

    def compose(self) -> ComposeResult:
        yield self._head
        yield self._pieces_box
        yield self._arguments
        yield self.progress_line
        yield self._result_area

    def on_mount(self) -> None:
        self._show_head()
        self.show_arguments()
        if self.result is not None:
            self._show_result()

    def show_arguments(self) -> None:
        """The arguments grew (or the call ended): show them as they are so far."""
        arguments = self.call.arguments
        if self.call.complete:
            self._show_whole_arguments()
            if self.status == "streaming":
                self.set_status("called")
        elif 0 <= self._shown_arguments <= len(arguments):
            self._grow_arguments(arguments)
        else:
            self._show_whole_arguments()

    def _grow_arguments(self, arguments: str) -> None:
        """Show what the arguments gained, cutting a piece off the open one when it is long."""
        if len(arguments) == self._shown_arguments:
            return
        self._open += visible(arguments[self._shown_arguments :])
        self._shown_arguments = len(arguments)
        if len(self._open) >= self._next_cut:
            width = self._arguments.content_size.width
            cut = _cut(self._open, width)
            if not cut and len(self._open) >= 4 * PIECE:  # Cut anyway: a line ends early.
                cut = self._open.rfind(" ", PIECE, 3 * PIECE) + 1 or 3 * PIECE
            if cut:
                self._cut_at_width = width
                piece = Static(Text(self._open[:cut]), classes="tool-arguments")
                self._pieces.append(piece)
                self._pieces_box.mount(piece)
                self._open = self._open[cut:]
                self._next_cut = PIECE
            else:  # Tried again when it has grown a little, not at every delta.
                self._next_cut = len(self._open) + PIECE // 4
        self._arguments.update(Text(self._open))

    def _show_whole_arguments(self) -> None:
        """Show the arguments as one text, once they are over or when the view changes width."""
        arguments = self.call.arguments
        shown = visible(arguments) or ("{}" if self.call.complete else "")
        if self._pieces:
            self._fold.unfold()
            self._pieces_box.remove_children(self._pieces)
            self._pieces.clear()
        elif shown == self._open and len(arguments) == self._shown_arguments:
            return
        self._shown_arguments = len(arguments)
        self._open = shown
        self._next_cut = PIECE
        self._arguments.update(Text(shown))

    def fold_above(self, screen_y: int) -> int:
        """Fold the pieces of streaming arguments that end above `screen_y`, a screen row."""
        return self._fold.fold(self._pieces, screen_y - self._pieces_box.content_region.y)

    def unfold(self) -> None:
        self._fold.unfold()

    def tail_height(self) -> int:
        return 0  # Arguments only grow, and their pieces show the lines they do whole.

    def on_resize(self, event: events.Resize) -> None:
        if self._pieces and self._arguments.content_size.width != self._cut_at_width:
            self._show_whole_arguments()  # Cut where the old width wrapped: whole, then cut again.

    def set_status(self, status: Status) -> None:
        if status != self.status:
            self.remove_class(f"-{self.status.replace(' ', '-')}")
            self.status = status
            self._show_head()

    def show_progress(self, progress: ToolProgress) -> bool:
        """Move the bar to `progress`, while the call runs and was not stopped; False if not."""
        if self.status != "running" or self.progress_frozen:
            return False
        self.progress_line.show(progress)
        return True

    def freeze_progress(self) -> None:
        """The turn was stopped: the bar stays where it is."""
        self.progress_frozen = True

    def cancel_sent(self, server: str) -> None:
        """An MCP call stopped while it ran: its cancellation went out to `server`.

        The status line says so once the call is "cancelled by you".
        """
        self._cancel_note = f"cancel sent to {visible(server)}"
        if self.status == "cancelled":
            self._show_head()

    def cut_off(self) -> None:
        """The reply ended (or was stopped) with this call's arguments unfinished."""
        if not self.call.complete:
            self._show_whole_arguments()
            self.set_status("cut off")

    def show_result(self, result: ToolResult) -> None:
        self.result = result
        self.progress_frozen = True  # Over: nothing moves the bar now.
        self.set_status(_RESULT_STATUS[result.state])
        if result.state == "ok":
            self.progress_line.display = False  # Done: how far it got says nothing more.
        if self.is_mounted:
            self._show_result()

    def _show_head(self) -> None:
        mark, words = _LABELS[self.status]
        head = Text()
        head.append(f"{mark} ", style="bold")
        head.append(visible(self.call.name) or "(no name yet)", style="bold")
        head.append(f"  {words}", style="italic")
        if self.status == "cancelled" and self._cancel_note:
            head.append(f" · {self._cancel_note}", style="italic")
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


def _cut(text: str, width: int) -> int:
    """Where to cut a piece off `text` so both parts show the lines the whole does; 0: nowhere.

    After its last line break, if it is far enough in; else where its last
    but one line at `width` starts (lines before the last keep their breaks as
    text is added), if the two parts wrap to the same lines as the whole.
    """
    newline = text.rfind("\n") + 1
    if newline >= PIECE // 2:
        return newline
    if width <= 0 or "\t" in text:  # Not laid out yet; tabs are expanded as they wrap.
        return 0
    lines = _wrapped(text, width)
    if len(lines) < 3:
        return 0
    cut = 0
    for line in lines[:-2]:  # Where each line ends, with the spaces it wrapped at.
        cut += len(line)
        while text[cut : cut + 1] == " ":
            cut += 1
        if text[cut : cut + 1] == "\n":
            cut += 1
    return cut if _wrapped(text[:cut], width) + _wrapped(text[cut:], width) == lines else 0


def _wrapped(text: str, width: int) -> list[str]:
    """The lines `text` shows as at `width`, without the spaces that end them (never seen)."""
    return [line.plain.rstrip(" ") for line in Content(text).wrap(width)]
