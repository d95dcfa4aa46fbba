"""The widgets of the conversation: user prompts, model replies, tool calls, errors.

Model text is untrusted: replies go to a `Markdown` widget (Markdown is
rendered, Rich markup is not), everything else is shown as plain `Text`; all
of it passes through `visible()` first so terminal control sequences are
shown, never acted on.

The views of a reply's parts (its Markdown, thinking, tool calls) are imported
where a reply first needs them, not with this module: the first frame of an
empty conversation waits for none of them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from chatui._textual.repeat_lines import RepeatedMiddle
from chatui._textual.top_down import TopDownStack
from chatui.messages import (
    ModelResponse,
    ResponseState,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResult,
)
from chatui.sanitize import visible

if TYPE_CHECKING:
    from textual.widgets.markdown import MarkdownStream

    from chatui.widgets.reply_markdown import ReplyMarkdown
    from chatui.widgets.thinking import ThinkingView
    from chatui.widgets.tool_call import Status, ToolCallView


def reply_markdown(text: str | None = None) -> ReplyMarkdown:
    """A Markdown widget for (a text run of) a reply.

    Its module (with Textual's Markdown and markdown-it) is imported with the
    first reply shown: an empty conversation draws its first frame without.
    """
    from chatui.widgets.reply_markdown import ReplyMarkdown

    return ReplyMarkdown(text)


class UserMessage(Static):
    """A prompt the user sent (`item_id`: its `UserPrompt`'s id)."""

    def __init__(self, text: str, item_id: str = "") -> None:
        super().__init__(Text(visible(text)), classes="user-message")
        self.border_title = "You"
        self.item_id = item_id


class ContextDivider(Static):
    """Where the model's view of the conversation starts, once it outgrew its context."""

    TEXT = "Above: no longer sent to the model, whose context is full (still here and stored)"

    def __init__(self) -> None:
        super().__init__(Text(f"▲ {self.TEXT}"), classes="context-divider")


class ErrorNotice(Static):
    """An error shown inline in the conversation."""

    def __init__(self, text: str) -> None:
        super().__init__(Text(visible(text)), classes="error-notice")
        self.border_title = "Error"


class AssistantMessage(Vertical, TopDownStack, RepeatedMiddle):
    """A model reply, streamed into Markdown, with a marker when it did not complete.

    Text goes through one `MarkdownStream` per text run (a tool call, or
    reasoning after text, starts a new run); reasoning goes to a collapsed
    `ThinkingView` of its own. `mark_stopped()` is the acknowledgement of a stop: synchronous,
    it shows the marker and closes the view, so nothing written afterwards is
    shown; `late_writes` counts such writes, which the turn runner guarantees
    never happen. `finish()` then flushes the text that arrived before the stop.
    """

    def __init__(self, response: ModelResponse, *, streaming: bool = True) -> None:
        super().__init__(classes="assistant-message")
        self.response = response
        # Content, not a str: a str title is parsed as markup, and a model's file name
        # is not ours (`m[@click=app.quit]x.gguf`).
        # Which provider and model wrote it: a conversation can change both.
        names = [name for name in (response.provider, response.model) if name]
        self.border_title = Content(visible(" · ".join(names)))
        self._streaming = streaming
        self._stream: MarkdownStream | None = None
        self._calls: dict[int, ToolCallView] = {}  # By the call's index in the stream.
        self._call_views: list[ToolCallView] = []  # Every call's, in order.
        self._thinking: ThinkingView | None = None  # The reasoning streaming now, if any.
        self._marker = Static(classes="marker")
        self._next_markdown = reply_markdown()
        self._marker.display = False
        self.closed = not streaming
        self.stopped_at: float | None = None
        self.late_writes = 0
        self.written = 0
        self.hints = ""  # What the marker suggests next ("Ctrl+G continue"), while it may.

    def fold_above(self, screen_y: int) -> int:
        """Fold the early blocks of text runs (and tool calls' arguments) above `screen_y`."""
        return sum(part.fold_above(screen_y) for part in self._folding_parts())

    def unfold(self) -> None:
        for part in self._folding_parts():
            part.unfold()

    def _folding_parts(self) -> list[ReplyMarkdown | ToolCallView]:
        from chatui.widgets.reply_markdown import ReplyMarkdown  # Imported with the first run.
        from chatui.widgets.tool_call import ToolCallView

        return [child for child in self.children if isinstance(child, ReplyMarkdown | ToolCallView)]

    def settled(self) -> bool:
        """Whether its parts and their blocks are in and laid out (`fold.Settles`)."""
        # No children before its composed parts are mounted (the marker is one); and its own
        # place must hold its runs' (it is laid out apart from them, and can lag behind).
        runs = self._text_runs()
        return (
            bool(self.children)
            and all(run.settled() for run in runs)
            and sum(run.virtual_region.height for run in runs if run.display)
            <= self.virtual_region.height
        )

    def tail_height(self) -> int:
        runs = self._text_runs()  # Only the last can still grow (or shrink).
        return runs[-1].tail_height() if runs else 0

    def _text_runs(self) -> list[ReplyMarkdown]:
        from chatui.widgets.reply_markdown import ReplyMarkdown  # Imported with the first run.

        # Children, not a DOM query: this runs after every layout of a streaming frame.
        return [child for child in self.children if isinstance(child, ReplyMarkdown)]

    def compose(self) -> ComposeResult:
        if self._streaming:
            yield self._next_markdown
        else:
            for part in self.response.parts:
                if isinstance(part, ToolCallPart):
                    from chatui.widgets.tool_call import ToolCallView

                    view = ToolCallView(part)
                    self._call_views.append(view)
                    yield view
                elif isinstance(part, ThinkingPart):
                    if part.text or part.redacted:
                        from chatui.widgets.thinking import ThinkingView

                        yield ThinkingView(part, streaming=False)
                elif part.text:
                    yield reply_markdown(visible(part.text))
        yield self._marker

    def on_mount(self) -> None:
        if not self._streaming:
            for view in self._call_views:
                view.cut_off()
            self._show_marker()

    async def write(self, text: str) -> None:
        """Append streamed reply text."""
        if self.closed:
            self.late_writes += 1
            return
        self.written += 1
        if self._thinking is not None:  # Checked here, per token: the call only once.
            self._end_thinking()
        if self._stream is None:
            # The widget is already mounted: nothing here awaits before the text is
            # queued, so a stop cannot come between storing a token and showing it.
            self._stream = self._next_markdown.get_stream(self._next_markdown)
        await self._stream.write(visible(text))

    async def write_thinking(self, part: ThinkingPart) -> None:
        """Show streamed reasoning: `part`, which has just grown (or arrived redacted)."""
        if self.closed:
            self.late_writes += 1
            return
        if self._thinking is not None and self._thinking.part is part:
            self._thinking.grow()
            return
        self._end_thinking()
        from chatui.widgets.thinking import ThinkingView

        view = self._thinking = ThinkingView(part, streaming=not part.redacted)
        if self._stream is None:  # No text in the current run yet: the reasoning goes first.
            await self.mount(view, before=self._next_markdown)
        else:
            await self._start_run_after(view)

    async def start_tool_call(self, index: int, call: ToolCallPart) -> None:
        if self.closed:
            self.late_writes += 1
            return
        self._end_thinking()
        from chatui.widgets.tool_call import ToolCallView

        view = ToolCallView(call)
        self._calls[index] = view
        self._call_views.append(view)
        await self._start_run_after(view)

    async def _start_run_after(self, view: Widget) -> None:
        """End the current text run, then show `view` and a new run for the text after it."""
        await self._end_text_run()
        if self.closed:  # Stopped while the text run ended: nothing more is shown.
            self.late_writes += 1
            return
        self._next_markdown = reply_markdown()
        await self.mount_all([view, self._next_markdown], before=self._marker)

    def update_tool_call(self, index: int) -> None:
        if self.closed:
            self.late_writes += 1
        elif index in self._calls:
            self._calls[index].show_arguments()

    def set_tool_status(self, call_id: str, status: Status) -> bool:
        """Show that a call of this reply waits for approval, or runs; False if not ours.

        Of calls sharing an id (stored by older versions), the first without a result.
        """
        for view in self._call_views:
            if view.call.id == call_id and view.result is None:
                view.set_status(status)
                return True
        return False

    def show_tool_result(self, call: ToolCallPart, result: ToolResult) -> None:
        """Show `result` under `call`, a call of this reply (paired as the history pairs them)."""
        view = next((v for v in self._call_views if v.call is call), None)
        if view is not None and view.result is not result:
            view.show_result(result)
            if result.state == "cancelled" and self.is_mounted:
                self._show_marker()  # Stopped while it ran: the reply's work was interrupted.

    async def reopen(self) -> None:
        """Stream into this reply again: Continue goes on with its response.

        The turn has dropped the response's tool calls (none ran): their views
        go. The new text follows the old in its last text run, so the seam does
        not show; the marker becomes the "continued" note. A stop marks it as
        any streaming reply.
        """
        self.closed, self.stopped_at, self._streaming, self.hints = False, None, True, ""
        kept = self.response.tool_calls
        gone = [view for view in self._call_views if not any(view.call is c for c in kept)]
        self._call_views = [view for view in self._call_views if view not in gone]
        self._calls = {}
        self._show_marker()
        await self.remove_children(gone)
        from chatui.widgets.reply_markdown import ReplyMarkdown  # Imported with the first run.

        parts, children = self.response.parts, list(self.children)
        last = children[-2] if len(children) > 1 else None  # The marker is the last child.
        if isinstance(last, ReplyMarkdown) and parts and isinstance(parts[-1], TextPart):
            self._next_markdown = last
        else:
            self._next_markdown = reply_markdown()
            await self.mount(self._next_markdown, before=self._marker)

    def show_hints(self, hints: str) -> None:
        """Suggest what to do next after the marker ("Ctrl+G continue"), or nothing ("")."""
        if hints != self.hints:
            self.hints = hints
            if self.closed and self.is_mounted:
                self._show_marker()

    def mark_stopped(self) -> None:
        """Acknowledge a stop at once: close the view and show the marker."""
        self.closed = True
        self.stopped_at = time.perf_counter()
        for view in self._call_views:
            view.cut_off()
        self._show_marker(ResponseState.INTERRUPTED)

    async def finish(self) -> None:
        """The response ended: flush the text received before, then show how it ended."""
        self.closed = True
        self._end_thinking()
        await self._end_text_run()
        for view in self._call_views:
            view.cut_off()
        # A stop after the reply ended (its tools ran, say) still stopped this turn.
        self._show_marker(ResponseState.INTERRUPTED if self.stopped_at is not None else None)

    def _end_thinking(self) -> None:
        if self._thinking is not None:
            self._thinking.end()
            self._thinking = None

    async def _end_text_run(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()
            await self._next_markdown.settle()  # A long last block, drawn whole.

    def _show_marker(self, state: ResponseState | None = None) -> None:
        state = state or self.response.state
        if any(view.status == "cancelled" for view in self._call_views):
            state = ResponseState.INTERRUPTED  # Complete, but a stop cancelled its tool call.
        self.set_class(state is ResponseState.INTERRUPTED, "-interrupted")
        self.set_class(state is ResponseState.FAILED, "-failed")
        words, style = self._marker_words(state)
        continued = self.response.continued > 0 and words.startswith("↻")
        self.set_class(continued, "-continued")
        marker = self._marker
        marker.display = bool(words)
        if words:
            hints = self.hints if self.closed and state is not ResponseState.STREAMING else ""
            marker.update(Text.assemble((words, style), (f" · {hints}" if hints else "", "")))

    def _marker_words(self, state: ResponseState) -> tuple[str, str]:
        """The marker's words and their style; "" when the reply ended as it should."""
        if state is ResponseState.INTERRUPTED:
            words = "■ interrupted"
            if not self.response.parts:
                words += " before the first token"
            return words, "bold"
        if state is ResponseState.FAILED:
            return "✗ failed", "bold"
        if state is ResponseState.STREAMING and not self._streaming:
            # Loaded while its writer (another chatui) still runs: never shown as complete.
            return "… unfinished: another chatui is still writing it", "italic"
        continued = "↻ continued" if self.response.continued else ""
        if state is not ResponseState.STREAMING and self.response.finish_reason == "length":
            cut = "… stopped at the token limit"
            return (f"{continued} · {cut}" if continued else cut), "italic"
        return continued, "dim italic"
