"""The chat screen's side of one turn: its replies, tool calls, approvals, status and stop.

A `TurnView` is the `TurnObserver` of one turn. The turn awaits it for each
event, so what was stored is on screen before the turn goes on; it answers
the turn's approvals with the approval dialog; after a stop, the turn awaits
`stop_shown` before it stores the partial reply, so the stop is drawn first.

The chat screen makes one per turn, before the turn, from the widgets on
screen (the message list, the status bar, the composer) and the replies
already shown that the turn may go on with; it cancels the turn itself, and
asks the view to draw the stop (`show_stop`), and to show how the turn ended
(`show_outcome`).

A running call's progress moves its bar until the stop, never after. An MCP
call stopped while it ran learns from the app's MCP manager when its cancel
was sent to the server (`CancelSent`), which can be after the turn is over:
the view listens for it from the stop until every such call has heard, for
`CANCEL_NEWS_WAIT` seconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from textual import events
from textual.screen import Screen
from textual.widget import Widget

from chatui._textual.first_draw import event_clock
from chatui._textual.frame_clock import draw_when_settled, draw_widgets_now
from chatui.history import pair_results
from chatui.mcp.events import CancelSent, McpEvent
from chatui.messages import (
    Conversation,
    Item,
    ModelResponse,
    ResponseState,
    ToolCallPart,
)
from chatui.providers.base import (
    PromptProgress,
    RedactedThinking,
    RetryWait,
    StreamEnd,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from chatui.screens.approval import ApprovalDialog
from chatui.tools.protocol import Approval
from chatui.tools.registry import ToolRegistry
from chatui.turn import (
    ContextFill,
    ContextTrimmed,
    ResponseStarted,
    ToolResultAdded,
    ToolStatusChanged,
    TurnEvent,
    TurnOutcome,
)
from chatui.widgets.chat_message import (
    AssistantMessage,
    ContextDivider,
    ErrorNotice,
    UserMessage,
)
from chatui.widgets.composer import Composer
from chatui.widgets.message_list import MessageList
from chatui.widgets.status_bar import Phase, StatusBar
from chatui.widgets.tool_call import ToolCallView

CANCEL_NEWS_WAIT = 15.0  # Seconds the view listens for a stopped MCP call's `CancelSent`.
# Seconds the stop's full frame waits for stopped MCP calls' cancels to go out first (the
# status line already says "stopping"): drawn first, the frame held them 5-10 ms.
CANCELS_FIRST = 0.02
HTTP_ABORT_STEPS = 3  # Loop steps more, for an HTTP call's transport to abort its POST.


class TurnView:
    """Shows one turn as it runs, and answers it (a `TurnObserver`)."""

    def __init__(
        self,
        screen: Screen[Any],
        conversation: Conversation,
        *,
        messages: MessageList,
        status: StatusBar,
        composer: Composer,
        approved: set[str],
        stop: Callable[[float | None], None],
        shown: Sequence[AssistantMessage] = (),
    ) -> None:
        """`approved`: the tools approved for this conversation (kept across its turns).

        `stop(key_time)` stops the turn as Esc does (the approval dialog's Esc).
        `shown`: replies already on screen; a request of this turn that goes on
        with one of them (its `ResponseStarted` names that response: Continue) is
        shown in it, reopened, not in a new reply.
        """
        self._screen = screen
        self._conversation = conversation
        self._messages = messages
        self._status = status
        self._composer = composer
        self._approved = approved
        self._stop = stop
        self._shown = {id(view.response): view for view in shown}
        self._reopened: dict[AssistantMessage, int] = {}  # Each with its `continued` count.
        self.views: list[AssistantMessage] = []  # This turn's replies, in order.
        self.current: AssistantMessage | None = None  # The reply the events go to.
        self.stop_requested_at: float | None = None  # When the Esc's byte was read.
        self.stop_drawn_at = 0.0  # When the whole stop (status, marker, last text) was on screen.
        self._stop_drawn: asyncio.Task[None] | None = None
        self._ended = False  # The outcome is shown: whatever comes now is late.
        self._asking = asyncio.Lock()  # One approval dialog at a time.
        self._answered_at = -math.inf  # When the last approval dialog was answered.
        # Typed (or pasted) before the dialog showed: the composer's.
        self._early_keys: list[events.Key | events.Paste] = []
        self._tool_views: dict[str, ToolCallView] = {}  # Each call's view, by id, once it reported.
        # MCP calls stopped while they ran, until they hear that their cancel was sent.
        self._cancelling: dict[str, ToolCallView] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._news_wait: asyncio.TimerHandle | None = None  # Ends the listening.
        self._cancels_out = asyncio.Event()  # Set once no stopped call waits for its news.

    def begin(self) -> None:
        """The prompt is sent: the status line says so, the last turn's figures gone."""
        self._show(Phase.WAITING, response=None, stop_ms=None, detail="")

    # The turn's observer

    async def on_event(self, event: TurnEvent) -> None:
        """Show one event of the turn; awaited by the turn, so it is on screen before it goes on.

        An event that comes once the outcome is shown (late, from a turn that
        is over) shows nothing: the screen may be showing the next turn.
        """
        if self._ended:
            return
        payload, view, status = event.payload, self.current, self._status
        match payload:
            case ContextFill(tokens=tokens, window=window):
                status.context = (tokens, window)
                return
            case ContextTrimmed(view_start=view_start):
                await self._show_view_start(view_start)
                return
            case ResponseStarted(response=response):
                await self._start_reply(response)
                self._show(Phase.STREAMING, response=response, detail="")
            case _ if view is None:
                return
            case TextDelta(text=text):
                await view.write(text)
            case ThinkingDelta() | RedactedThinking():
                await view.write_thinking(view.response.thinking[-1])  # The part it grew.
            case ToolCallStart(index=index):
                await view.start_tool_call(index, view.response.tool_calls[-1])
            case ToolCallDelta(index=index) | ToolCallEnd(index=index):
                view.update_tool_call(index)
            case ToolResultAdded():
                show_results(self._conversation.items, self.views)
                return
            case ToolStatusChanged(call_id=call_id, progress=progress) if progress is not None:
                # Many a second, maybe: the bar alone moves, repainted in place.
                call_view = self._tool_view(call_id)
                if call_view is not None and self.stop_requested_at is None:
                    call_view.show_progress(progress)
                return
            case ToolStatusChanged(call_id=call_id, status=tool_status):
                # The calls run after their reply ended: theirs may be an earlier view of the
                # turn (the latest that has the call: ids are unique, but older versions
                # repeated them).
                for turn_view in reversed(self.views):
                    if turn_view.set_tool_status(call_id, tool_status):
                        break
                self._tool_view(call_id)
                asking = tool_status == "approval"
                self._show(Phase.AWAITING_APPROVAL if asking else Phase.RUNNING_TOOLS, detail="")
                return
            case StreamEnd():
                await view.finish()  # The rest of the text, then the reply's end, on screen at
                await draw_when_settled(self._screen, view)  # once, before the turn wraps up.
            case PromptProgress(done=done, total=total):
                reading = total and done < total
                status.detail = f"reading the prompt {100 * done // total}%" if reading else ""
                return
            case RetryWait(seconds=seconds, reason=reason):
                status.detail = f"retrying in {seconds:.0f} s ({reason})"
                return
        if status.state is not Phase.STREAMING:
            status.state, status.detail = Phase.STREAMING, ""
        status.touch()

    async def approve(self, call: ToolCallPart) -> Approval:
        """Whether a tool call that needs approval may run: the approval dialog.

        One dialog at a time (parallel calls queue). A tool approved "for
        this conversation" is not asked about again in it. This is awaited in
        the turn's task, so Esc (which cancels that task, from the dialog
        too) ends the wait and closes the dialog; the call does not run.
        """
        approved = self._approved
        async with self._asking:
            # An MCP tool is approved as its server's own tool: a new listing may give its
            # API name to another tool of the server (or of another server).
            server, tool = self._mcp_origin(call.name)
            key = f"{server}\0{tool}" if server else call.name
            if key in approved:
                return Approval.CONVERSATION
            answered: asyncio.Future[Approval | None] = asyncio.get_running_loop().create_future()

            def answer(approval: Approval | None) -> None:
                self._answered_at = event_clock()
                if not answered.done():
                    answered.set_result(approval)

            dialog = ApprovalDialog(call, self._stop, self._typed_ahead, server=server, tool=tool)
            try:
                await self._screen.app.push_screen(dialog, answer)
                approval = await answered
            except asyncio.CancelledError:  # Stopped (Esc, quitting): the dialog goes too.
                _close(dialog)
                raise
            finally:
                self._replay_typed_ahead()
        if approval is Approval.CONVERSATION:
            approved.add(key)
        return approval or Approval.DENY

    async def stop_shown(self) -> None:
        """Wait until the stop is on screen (the turn then stores the partial reply)."""
        if self._stop_drawn is not None:
            await asyncio.shield(self._stop_drawn)

    # Asked by the screen

    def show_stop(self, key_time: float | None) -> None:
        """Draw the stop at once: the screen has just cancelled the turn.

        `key_time` is when the Esc's byte was read from the terminal (its key
        event's `time`), or None for now; the status bar's "stopped in" counts
        from it to the stop on screen.
        """
        self.stop_requested_at = time.monotonic() if key_time is None else key_time
        self._show(Phase.STOPPING)
        if (view := self.current) is not None:
            view.mark_stopped()  # No more text reaches it; its marker waits for a layout.
        self._stop_running_calls()
        # First frame: the status line alone, which needs no layout (about 1 ms).
        draw_widgets_now(self._screen, self._status)
        # The rest of the stop (the marker, which lays the list out) is drawn as soon as
        # it reaches the screen, not at the frame clock's next tick; the turn stores the
        # partial reply after this (`stop_shown`). The task is kept: the event loop holds
        # tasks only weakly.
        self._stop_drawn = asyncio.create_task(self._draw_stop(view or self._status))

    async def show_outcome(self, outcome: TurnOutcome, *, provider: str) -> None:
        """Show how the turn ended: its last reply, a notice, the status line.

        `provider` names who would have answered a turn stopped before any
        reply began. A prompt refused before it was sent is taken back.
        """
        self._ended = True
        if outcome.refused:
            await self._take_back(outcome)
            return
        if self.current is not None:
            await self.current.finish()
        await self._redraw_restored()
        show_results(self._conversation.items, self.views)  # Stored after the stop too.
        last = outcome.responses[-1] if outcome.responses else None
        if outcome.state is ResponseState.INTERRUPTED:
            if last is None:
                notice = AssistantMessage(ModelResponse(provider, ""), streaming=False)
                notice.response.state = ResponseState.INTERRUPTED
                await self._messages.mount(notice)
            stop_ms = None
            if self._stop_drawn is not None and self.stop_requested_at is not None:
                await asyncio.shield(self._stop_drawn)  # Esc's byte read to the stop drawn.
                stop_ms = (self.stop_drawn_at - self.stop_requested_at) * 1000
            self._show(Phase.STOPPED, stop_ms=stop_ms, detail="")
        elif outcome.state is ResponseState.FAILED:
            await self._messages.mount(ErrorNotice(outcome.error or "The request failed."))
            self._show(Phase.FAILED, detail="")
        else:
            self._show(Phase.IDLE, detail="")
        self._status.response = last

    # Helpers

    def _mcp_origin(self, name: str) -> tuple[str, str]:
        """The MCP server of the tool `name` and the server's own name for it; ("", "") if none.

        An MCP tool (`chatui.mcp.tools.McpTool`, not imported here: the SDK is
        slow to import) says both; a built-in tool has neither.
        """
        registry = getattr(getattr(self._screen, "session", None), "tools", None)
        if not isinstance(registry, ToolRegistry) or name not in registry:
            return "", ""
        tool = registry[name]
        server, own = getattr(tool, "server_name", ""), getattr(tool, "tool_name", "")
        return (server, own) if isinstance(server, str) and isinstance(own, str) else ("", "")

    def _tool_view(self, call_id: str) -> ToolCallView | None:
        """The view of this turn's call `call_id` that has no result yet, found once."""
        found = self._tool_views.get(call_id)
        if found is not None and found.result is None:
            return found
        for turn_view in reversed(self.views):
            for call_view in turn_view.query(ToolCallView):
                if call_view.call.id == call_id and call_view.result is None:
                    self._tool_views[call_id] = call_view
                    return call_view
        return None

    def _stop_running_calls(self) -> None:
        """The stop: no running call's bar moves again; MCP calls listen for their cancel's news.

        Only a call whose request reached its server hears `CancelSent` (one
        stopped while its server was still starting never does), within the
        SDK's few seconds' bound on writing the cancel: the view listens for
        `CANCEL_NEWS_WAIT` seconds at most.
        """
        running = {i: v for i, v in self._tool_views.items() if v.status == "running"}
        for call_view in running.values():
            call_view.freeze_progress()
        # A built-in tool's call has no server to hear from: waiting for its news would
        # hold the stop's frame back (`_draw_stop`) for nothing.
        mcp_calls = {i: v for i, v in running.items() if self._mcp_origin(v.call.name)[0]}
        manager = getattr(self._screen.app, "mcp", None)
        if not mcp_calls or manager is None or self._unsubscribe is not None:
            return
        self._cancelling = mcp_calls
        self._cancels_out.clear()
        self._unsubscribe = manager.subscribe(self._on_mcp_event)
        self._news_wait = asyncio.get_running_loop().call_later(
            CANCEL_NEWS_WAIT, self.stop_listening
        )

    def _on_mcp_event(self, event: McpEvent) -> None:
        """The manager's news: a stopped call's cancel reached its server."""
        if not isinstance(event, CancelSent):
            return
        call_view = self._cancelling.pop(event.call_id, None)
        if call_view is not None:
            call_view.cancel_sent(event.server)
        if not self._cancelling:
            self.stop_listening()

    def stop_listening(self) -> None:
        """Hear no more from the MCP manager (every cancel was sent, or no news came in time)."""
        self._cancels_out.set()
        if self._news_wait is not None:
            self._news_wait.cancel()
            self._news_wait = None
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()

    async def _start_reply(self, response: ModelResponse) -> None:
        """A request began: its reply on screen, a new one or the one it goes on with."""
        if self.current is not None:
            await self.current.finish()  # The previous request of this turn (a tool call's).
        view = self._shown.pop(id(response), None)
        shown = view is not None
        if view is None:
            view = AssistantMessage(response)
        # The reply the events go to from now on, before any await: a stop meanwhile marks it.
        self.current = view
        self.views.append(view)
        if shown:
            self._reopened[view] = response.continued
            await view.reopen()
        else:
            await self._messages.mount(view)

    async def _redraw_restored(self) -> None:
        """A reopened reply to which nothing came is as it was (the turn put it back): redrawn."""
        for view, continued in self._reopened.items():
            if view.response.continued < continued and view.is_attached:
                again = AssistantMessage(view.response, streaming=False)
                await self._messages.mount(again, before=view)
                await view.remove()
                self.views[self.views.index(view)] = again
                if self.current is view:
                    self.current = again
        self._reopened.clear()

    async def _draw_stop(self, widget: Widget) -> None:
        if self._unsubscribe is not None:  # Stopped MCP calls: their cancels go out first.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANCELS_FIRST):
                    await self._cancels_out.wait()
            for _ in range(HTTP_ABORT_STEPS):  # An HTTP call's abort is its transport's: a
                await asyncio.sleep(0)  # few more steps, before the frame holds the loop.
        await draw_when_settled(self._screen, widget)
        self.stop_drawn_at = time.monotonic()

    async def _show_view_start(self, view_start: str | None) -> None:
        """Move the divider to just above the prompt where the model's view now starts."""
        messages = self._messages
        messages.unfold()  # The prompt may be folded far above: placed among the laid-out items.
        for divider in messages.query(ContextDivider):
            await divider.remove()
        for widget in messages.items:
            if isinstance(widget, UserMessage) and widget.item_id == view_start:
                await messages.mount(ContextDivider(), before=widget)
                return

    async def _take_back(self, outcome: TurnOutcome) -> None:
        """A prompt refused before it was sent: off the screen, and back in the composer."""
        for widget in list(self._messages.items):
            mine = isinstance(widget, UserMessage) and widget.item_id == outcome.prompt.id
            if mine or widget in self.views:
                await widget.remove()
        self.views, self.current = [], None
        await self._show_view_start(self._conversation.view_start)  # A trim for it is undone.
        composer = self._composer
        if composer.prompts and composer.prompts[-1] == outcome.prompt.text:
            composer.prompts.pop()  # Not sent: not one of the conversation's prompts.
        composer.restore(outcome.prompt.text)
        await self._messages.mount(ErrorNotice(outcome.error or "The prompt was not sent."))
        self._show(Phase.FAILED, detail="", response=None)

    def _typed_ahead(self, key: events.Key | events.Paste) -> None:
        """A key typed before the approval dialog was on screen: the composer's, once it closes.

        Unless it was typed while the previous dialog was open (a second `y` for
        parallel calls): meant for a dialog, it goes nowhere.
        """
        if key.time > self._answered_at:
            self._early_keys.append(key)

    def _replay_typed_ahead(self) -> None:
        """The keys typed before the dialog showed, in order, to the composer they were for."""
        keys, self._early_keys = self._early_keys, []
        if keys:
            self._screen.run_worker(self._composer.type_keys(keys), group="typed-ahead")

    def _show(self, phase: Phase, **values: object) -> None:
        status = self._status
        status.state = phase
        for name, value in values.items():
            setattr(status, name, value)


def show_results(items: list[Item], views: Sequence[AssistantMessage]) -> None:
    """Show each result of `items` under its call in `views`, paired as the model's history is.

    By the call itself, not its id: a conversation stored by an older
    version may give several calls one id (a server that sent none, or the
    same one each time), and a result must not be shown under another call.
    """
    by_response = {id(view.response): view for view in views}
    for (n, k), result in pair_results(items).items():
        view = by_response.get(id(items[n]))
        if view is not None:
            view.show_tool_result(view.response.tool_calls[k], result)


def _close(dialog: Screen[Any]) -> None:
    """Take `dialog` off the screen stack, with whatever was opened over it."""
    if dialog.is_attached and dialog in dialog.app.screen_stack:
        dialog.pop_until_active()
        dialog.dismiss(None)
