"""The chat screen: the conversation, the composer, the status bar, and Esc.

The screen composes and sends prompts, opens conversations and takes the
keys; each turn it starts is shown by a `TurnView` of its own (`turn_view.py`:
the replies, the approvals, the status line's phase, the stop drawn), which
the screen asks to draw the stop when Esc cancels the turn. Enter while a
turn runs queues the text (`message_queue.py`): a turn that completes sends
the first queued message next; after a stop or a failure they wait for
Ctrl+S. What Continue, Retry, Edit and the version flips may act on is
`turn_choices.py`'s to say.

Nothing the user writes is lost: the composer's draft is kept with its
conversation (`drafts.py`); text typed or pasted while the focus is on the
message list goes to the composer; PageUp, PageDown, Home and End scroll the
conversation from the composer when the composer has no use for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.widgets import Static, TextArea

from chatui._textual.bindings import focus_chain_binds
from chatui._textual.escape import EscapeFirstScreen
from chatui._textual.footer import KeyFooter
from chatui.gc_pause import FullCollectionHold
from chatui.messages import Conversation, ModelResponse, ResponseState, UserPrompt
from chatui.providers.lifecycle import ProviderError
from chatui.providers.registry import ModelChoice
from chatui.screens.drafts import DraftKeeper
from chatui.screens.message_queue import MessageQueue
from chatui.screens.turn_choices import (
    Editing,
    Versions,
    can_choose,
    continue_target,
    next_edit,
    replaced_widgets,
    show_hints,
)
from chatui.session import ConversationRefused, NoProvider, Session, SessionError
from chatui.turn_kinds import Continue, NewPrompt, Retry, TurnAsk, last_prompt, retryable
from chatui.widgets.chat_message import (
    AssistantMessage,
    ContextDivider,
    ErrorNotice,
    UserMessage,
)
from chatui.widgets.composer import Composer
from chatui.widgets.message_list import MessageList, MoreBelow
from chatui.widgets.queue_panel import QueuePanel
from chatui.widgets.status_bar import Phase, StatusBar
from chatui.widgets.versions import BranchedFrom, EditBanner
from chatui.widgets.welcome import Welcome

if TYPE_CHECKING:
    from chatui.screens.turn_view import TurnView
    from chatui.turn import Turn, TurnOutcome

SHOWN_ITEMS = 40
OWN_SYSTEM_PROMPT = "own system prompt"  # Under the composer, while the conversation has one.
AFTER_STOP = ("continue_reply", "retry", "edit_prompt")  # Taken once a stop has wrapped up.
# What does nothing while the screen switches conversations: each would act on one of the two.
NOT_WHILE_SWITCHING = (
    "retry",
    "continue_reply",
    "edit_prompt",
    "cancel_edit",
    "version",
    "send_queued",
    "show_earlier",
    "new_conversation",
    "conversations",
)


class ChatScreen(EscapeFirstScreen[None]):
    """One conversation at a time; Esc stops the running turn."""

    BINDINGS = [
        # Esc usually stops a turn before it is even queued (ChatApp.post_message,
        # through stop_for_escape). This binding shows it in the footer, and takes a
        # key posted from another thread: priority, so that the key stops the turn
        # before visiting the focused widget and bubbling back. check_action lets Esc
        # through to a focused widget that binds Esc itself, and when no turn runs.
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+r", "retry", "Retry"),
        # Not in the footer, which is full at 80 columns: the interrupted marker names them.
        Binding("ctrl+g", "continue_reply", "Continue", show=False),
        # Priority, or the composer takes Ctrl+E (its end of line, which End also does).
        Binding("ctrl+e", "edit_prompt", "Edit", show=False, priority=True),
        Binding("alt+left", "version(-1)", "Previous version", show=False, priority=True),
        Binding("alt+right", "version(1)", "Next version", show=False, priority=True),
        # After "stop", which takes Esc while a turn runs: else it cancels an edit.
        Binding("escape", "cancel_edit", show=False, priority=True),
        # Priority: taken as they arrive, before keys typed after them reach the composer
        # (Ctrl+N, text, Enter in one read sends the text in the new conversation).
        Binding("ctrl+n", "new_conversation", "New", priority=True),
        Binding("ctrl+o", "conversations", "Conversations", priority=True),
        # Not in the footer, which is full at 80 columns: the empty conversation and
        # the command palette name it.
        Binding("ctrl+l", "switch_model", "Model", show=False, priority=True),
        # Not in the footer either: the queue's panel names it while it would act.
        Binding("ctrl+s", "send_queued", "Send queued", show=False, priority=True),
        # Priority, or the composer takes Ctrl+U (delete to the line's start); it only
        # acts while earlier items are hidden (check_action), else the composer has it.
        Binding("ctrl+u", "show_earlier", "Earlier", show=False, priority=True),
        # Priority, or the composer takes them; each goes on to the focused widget when
        # that is not the composer or the composer has use for it (`Composer.wants_key`).
        *(
            Binding(key, f"scroll_conversation('{key}')", show=False, priority=True)
            for key in ("pageup", "pagedown", "home", "end")
        ),
    ]

    def __init__(self, session: Session, conversation: Conversation) -> None:
        super().__init__()
        self.session = session
        self.conversation = conversation
        self.turn: Turn | None = None
        self.turn_view: TurnView | None = None  # The screen's side of `turn`.
        self._turn_task: asyncio.Task[None] | None = None
        self.editing: Editing | None = None  # The prompt Ctrl+E put in the composer.
        self.versions = Versions()  # The conversation's versions on screen, and the flips.
        self.hidden_items = 0
        self._gc_hold: FullCollectionHold | None = None
        self.shown = asyncio.Event()  # Set once mounted, its conversation in the message list.
        self._until_drawn: list[FullCollectionHold] = []  # See `_full_passes_wait`.
        self._idle_escape_at = -math.inf  # When an Esc last found no turn to stop.
        self._welcome: Welcome | None = None  # Shown while the conversation is empty.
        self._approved: dict[str, set[str]] = {}  # Tools approved for each conversation.
        self._composer = Composer()
        self.drafts = DraftKeeper(
            session.store, self._composer, lambda: self.conversation.id, self._warn
        )
        self._queue_panel = QueuePanel()
        # The messages typed while a turn ran, each sent in its turn.
        self._queue = MessageQueue(session.store, self._queue_panel, self._warn)
        self._sent_at = -math.inf  # When the running turn was asked for (its key's read).
        self._leaving = False  # Stopping to switch or quit: nothing queued goes out meanwhile.
        # When the key whose binding runs now was read (set by the app around it), else None:
        # a turn that key starts is stopped by an Esc read with it or after it.
        self.key_time: float | None = None
        self._switching = False  # Between two conversations (`open_conversation`).
        # Ctrl+G, Ctrl+R or Ctrl+E pressed while a stop wrapped up, and when its key was
        # read: taken once the stop has wrapped up.
        self._after_stop: tuple[str, float | None] | None = None

    def compose(self) -> ComposeResult:
        yield MessageList(id="messages")
        yield MoreBelow()
        yield self._queue_panel
        yield EditBanner()
        yield self._composer
        yield StatusBar(id="status")
        yield KeyFooter()

    async def on_mount(self) -> None:
        try:
            await self._mount_conversation()
        finally:
            self.shown.set()  # Also if that failed: the app waits for this (`ChatApp.on_mount`).

    async def _mount_conversation(self) -> None:
        self._status = self.query_one(StatusBar)
        self._messages = self.query_one(MessageList)
        self._banner = self.query_one(EditBanner)
        self._status.provider, self._status.model = self.session.provider_label()
        self.session.begin_prepare(self.show_loading)  # The app shows how it ends.
        self.watch(self._messages, "more_below", self._show_more_below)
        await self.show_conversation(self.conversation)
        self.drafts.load(self.conversation)
        self._composer.focus()

    def on_unmount(self) -> None:
        self.drafts.save()  # However the app ends.
        if self.turn is not None:
            self.turn.cancel()  # However the app ends, a running turn stops the same way.
        if self._gc_hold is not None:
            self._gc_hold.release()  # No refresh comes any more.
        for hold in self._until_drawn:
            hold.release()

    # Conversation display

    async def show_conversation(
        self, conversation: Conversation, *, everything: bool = False
    ) -> None:
        """Replace the message list with `conversation`'s items.

        Only the last `SHOWN_ITEMS` items are mounted unless `everything`: the
        layout cost of every frame grows with the number of mounted widgets,
        and a long history must not slow down the reply that is streaming.
        The collector's full passes wait until they are drawn: mounting makes
        many objects, and a pass walks every live one, a long conversation's too.
        """
        with self._full_passes_wait():
            await self._show_conversation(conversation, everything)

    @contextlib.contextmanager
    def _full_passes_wait(self) -> Iterator[None]:
        """Full collections wait until what this draws is on screen (or the screen goes)."""
        hold = FullCollectionHold()
        self._until_drawn.append(hold)
        try:
            yield
        finally:
            self.call_after_refresh(self._drawn, hold)

    def _drawn(self, hold: FullCollectionHold) -> None:
        hold.release()
        if hold in self._until_drawn:
            self._until_drawn.remove(hold)

    async def _show_conversation(self, conversation: Conversation, everything: bool) -> None:
        self.conversation = conversation
        messages = self._messages
        items = conversation.items
        hidden = 0 if everything else max(0, len(items) - SHOWN_ITEMS)
        widgets: list[Static | AssistantMessage] = []
        if (origin := conversation.branched_from) is not None:
            widgets.append(BranchedFrom(origin.title))
        if hidden:
            widgets.append(Static(f"▲ {hidden} earlier items (Ctrl+U shows them)", id="earlier"))
        self.hidden_items = hidden
        self._welcome = Welcome() if not items else None
        if self._welcome is not None:
            widgets.append(self._welcome)
        views: list[AssistantMessage] = []
        for item in items[hidden:]:
            if isinstance(item, UserPrompt):
                if item.id == conversation.view_start:
                    widgets.append(ContextDivider())
                widgets.append(UserMessage(item.text, item.id))
            elif isinstance(item, ModelResponse):
                view = AssistantMessage(item, streaming=False)
                views.append(view)
                widgets.append(view)
                if item.state is ResponseState.FAILED and item.error:
                    widgets.append(ErrorNotice(item.error))
        if (notice := self.session.startup_notice) and self._welcome is None:
            widgets.append(ErrorNotice(notice))  # The welcome says it in an empty one.
        await messages.replace_items(widgets)
        self._show_system_prompt()
        self._show_welcome()
        # Over the items shown only: a call shown gets the result it gets over the whole path
        # (`pair_results` pairs a result with the latest earlier call of its id), and the
        # items not shown are not read.
        if views:
            from chatui.screens.turn_view import show_results  # See `start_turn`.

            show_results(items[hidden:], views)
        self._queue.load(conversation.id)
        self._show_choices()
        messages.anchor()
        self.refresh_bindings()

    def _show_system_prompt(self) -> None:
        """A word under the composer while the conversation has a system prompt of its own."""
        own = self.conversation.system_prompt is not None
        self._composer.border_subtitle = Text(OWN_SYSTEM_PROMPT, style="dim") if own else ""

    def action_system_prompt(self) -> None:
        """The open conversation's system prompt: edit it, or go back to the config's."""
        conversation, session = self.conversation, self.session
        own = conversation.system_prompt is not None
        from chatui.screens.system_prompt import PromptChange, SystemPromptDialog

        dialog = SystemPromptDialog(session.system_prompt_of(conversation), own=own)

        def chosen(change: PromptChange | None) -> None:
            if change is None:
                return
            try:
                session.set_system_prompt(conversation, change.text)
            except SessionError as error:
                self._tell(error)
            self._show_system_prompt()

        self.app.push_screen(dialog, chosen)

    def _show_more_below(self, shown: bool) -> None:
        self.query_one(MoreBelow).display = shown

    def _show_welcome(self) -> None:
        """Fill the empty conversation's page, then learn (maybe by a probe) if it can answer."""
        if self._welcome is None:
            return
        who = self.session.provider_label() if self.session.has_provider else None
        self._welcome.show(who, None, checking=True)
        self.run_worker(self._check_provider(self._welcome), group="check", exclusive=True)

    async def _check_provider(self, welcome: Welcome) -> None:
        problem = await self.session.problem()  # A deferred provider: once it is made.
        who = self.session.provider_label() if self.session.provider is not None else None
        if welcome is self._welcome:  # Still on screen (a switch restarts this worker).
            welcome.show(who, problem, checking=False)

    def show_loading(self, detail: str | None) -> None:
        """Show model preparation progress (None: done) while the user can type."""
        status = self._status
        if detail is not None:
            status.state, status.detail = Phase.LOADING, detail
        elif status.state is Phase.LOADING:
            status.state, status.detail = Phase.IDLE, ""

    async def show_error(self, text: str) -> None:
        await self._mount(ErrorNotice(text))

    # Sending and streaming

    @property
    def busy(self) -> bool:
        """Whether a prompt was accepted and its turn has not finished wrapping up."""
        return self._turn_task is not None and not self._turn_task.done()

    async def on_composer_submitted(self, message: Composer.Submitted) -> None:
        composer = self._composer
        if self.session.quitting:
            composer.restore(message.text)
            return  # Quitting overtook this Enter: no turn starts now.
        if self.busy:  # A turn runs: the text waits in the queue, sent when the reply completes.
            if self._queue.add(message.text) is None:
                composer.restore(message.text)  # Not stored (told why): it stays in the composer.
            self.refresh_bindings()
            composer.unlock()
            return
        ask = await self._asked(message.text)
        if ask is None or await self.start_turn(ask, key_time=message.key_time) is None:
            composer.restore(message.text)
        composer.unlock()  # Its turn exists (or it is back): from now on, Enter queues.

    async def start_turn(self, ask: TurnAsk, *, key_time: float | None = None) -> Turn | None:
        """Start a turn in the open conversation: a new prompt, a retry, or a continue.

        The turn exists before any await: an Esc from here on stops it, even
        before it runs. A new prompt is placed on screen (an edited one in place
        of its old version and what followed it), a retried reply leaves it, a
        continued one goes on where it is. `key_time`: when the key that asked
        for it was read. None, with the reason on screen, if no provider can answer.
        """
        # Imported by the first turn, if the app has not yet done so after its first frame.
        from chatui.screens.turn_view import TurnView

        messages, composer = self._messages, self._composer
        shown = (
            [
                v
                for v in messages.items
                if isinstance(v, AssistantMessage) and v.response is ask.response
            ]
            if isinstance(ask, Continue)
            else []
        )
        view = TurnView(
            self,
            self.conversation,
            messages=messages,
            status=self._status,
            composer=composer,
            approved=self._approved.setdefault(self.conversation.id, set()),
            stop=self.action_stop,
            shown=shown,
        )
        try:
            turn = self.session.new_turn(self.conversation, ask, observer=view)
        except NoProvider as problem:
            await self._mount(ErrorNotice(str(problem)))
            return None
        self.turn, self.turn_view = turn, view
        if self.editing is not None:  # Not this turn's prompt (`_asked` ends that edit).
            self.editing = None  # Enter now queues the text as it is: no banner says otherwise.
            self._banner.hide()
        self._sent_at = time.monotonic() if key_time is None else key_time
        self._queue.turn_started(turn.prompt.id)  # A queued message it sends leaves the panel.
        view.begin()
        show_hints(self.conversation, messages.items, running=True)
        gone = replaced_widgets(messages.items, ask, self.conversation.view_start)
        welcome, placed = self._welcome, None
        if welcome is not None:
            self._welcome = None
            welcome.display = False  # At once; removed below, after the prompt is placed.
        if isinstance(ask, NewPrompt):
            if ask.replaces is not None and composer.prompts[-1:] == [ask.replaces.text]:
                composer.prompts.pop()  # Its new version takes its place in Up's walk.
            composer.prompts.append(ask.text)
            placed = messages.mount(UserMessage(ask.text, turn.prompt.id))  # Before the reply.
        messages.follow()  # The prompt and its reply in sight, even if scrolled up.
        messages.receiving = True
        self._turn_task = asyncio.create_task(self._run_turn(turn))
        if key_time is not None and key_time <= self._idle_escape_at:
            self.action_stop()  # An Esc that came after this Enter, before the turn existed.
        self.refresh_bindings()
        if gone:
            await messages.remove_children(gone)
        if placed is not None:
            await placed
        if welcome is not None:
            await welcome.remove()
        return turn

    async def _asked(self, text: str) -> NewPrompt | None:
        """What Enter sends: a new prompt, or an edited one (Ctrl+E); None if it cannot be sent.

        An edit of the last prompt is a new version of it. An edit of an earlier
        one goes to a new conversation branched before that prompt, which opens
        (the original stays as it is); None if the branch could not be made.
        """
        editing, self.editing = self.editing, None
        self._banner.hide()
        items = self.conversation.items
        if editing is None or editing.prompt not in items:
            return NewPrompt(text)
        if editing.prompt is last_prompt(items):
            return NewPrompt(text, replaces=editing.prompt)
        original = self.conversation
        await self.open_conversation(None, branch_before=editing.prompt)
        return None if self.conversation is original else NewPrompt(text)

    async def _run_turn(self, turn: Turn) -> None:
        # The full pass held off during the turn waits for the turn's last frame:
        # run at the reply's end, it would hold that frame back by up to 0.4 s.
        self._gc_hold = hold = FullCollectionHold()
        try:
            outcome = await turn.run()
            try:
                await self._show_outcome(turn, outcome)
                await self._send_queued_after(turn, outcome)
            except Exception as error:  # A bug of ours: say so, and keep the app usable.
                await self.show_error(f"chatui could not show how the reply ended: {error!r}")
                self._status.state = Phase.FAILED
        finally:
            self.call_after_refresh(hold.release)
            if self.turn is turn:
                self._composer.unlock()
                self._messages.receiving = False
            after, self._after_stop = self._after_stop, None
            if after is not None and not self._leaving and not self.session.quitting:
                # Once this task is done (no longer `busy`), in the conversation it was for.
                self.call_later(self._take_choice_after_stop, *after, self.conversation)

    async def _show_outcome(self, turn: Turn, outcome: TurnOutcome) -> None:
        """The turn has ended: its view shows how, then the screen and the session wrap up."""
        view = self.turn_view
        assert view is not None  # Set with `turn`, before it ran.
        await view.show_outcome(outcome, provider=self.session.provider_label()[0])
        ask = turn.ask
        # Nothing kept of a retry or an edit: the old version is shown again; nor of a
        # continue stopped before its request: its reply is shown as it was, alone.
        kept_nothing = isinstance(ask, Retry | Continue) and not outcome.responses
        kept_nothing |= isinstance(ask, NewPrompt) and ask.replaces is not None and outcome.refused
        if kept_nothing or len(self._messages.items) > 2 * SHOWN_ITEMS:
            await self.show_conversation(self.conversation)  # Also keeps the layout small.
        else:
            self._show_choices()
        if outcome.refused:
            self.refresh_bindings()
            self.session.turn_finished(turn, outcome)  # Nothing to title: it was not kept.
            return
        self.refresh_bindings()
        try:
            self.session.turn_finished(turn, outcome)
        except SessionError as error:
            self._tell(error)

    # Actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # None, not False: the key stays in the footer, dimmed, so the footer keeps
        # the same keys from turn to turn (and Esc still reaches popups and inputs).
        if self._switching and action in NOT_WHILE_SWITCHING:
            return None  # Read while an Enter branches off (say): the screen is between two.
        if action == "stop":
            stoppable = self.turn is not None and self.turn.stoppable
            return True if stoppable and not self._focus_binds_escape() else None
        if action in ("retry", "continue_reply", "edit_prompt", "version", "cancel_edit"):
            return self._check_choice(action, parameters)
        if action == "show_earlier":
            return bool(self.hidden_items) and not self.busy
        if action == "send_queued":
            return True if self._queue.first is not None and not self.busy else None
        return True

    def action_stop(self, key_time: float | None = None) -> None:
        """Esc: stop the running turn, and have its view draw the stop at once.

        `key_time` is when the Esc's byte was read from the terminal (its key
        event's `time`); the status bar's "stopped in" counts from it to the
        stop on screen.
        """
        turn, view = self.turn, self.turn_view
        if turn is not None and view is not None and turn.stoppable and turn.cancel():
            view.show_stop(key_time)
            self.refresh_bindings()

    def stop_for_escape(self, key_time: float) -> bool:
        """Stop the running turn for an Esc that has just reached the app, as the binding would.

        Returns False, doing nothing, whenever the binding would not act: the
        key then goes its usual way (to a dialog, a dropdown, an input). An Esc
        that finds no turn to stop while this screen has it is remembered: a
        turn started by an Enter that came before it (in the same read from
        the terminal, say) is stopped as it starts.
        """
        if not self.is_current:
            return False
        if self.check_action("stop", ()) is True:
            self.action_stop(key_time)
            return True
        if not self._focus_binds_escape():
            self._idle_escape_at = max(self._idle_escape_at, key_time)
        return False

    def stop_for_ctrl_c(self, key_time: float | None) -> bool:
        """Ctrl+C with nothing selected: stop the running turn as Esc does; True if it stops one.

        `key_time`: when its byte was read, or None for a key that came
        another way (the app's binding). Unlike Esc, it acts whatever has the
        focus: nothing here binds Ctrl+C but to copy. Like Esc, one that finds
        no turn is remembered, so that a prompt sent by an Enter read just
        before it stops as it starts; for the binding, which such a key
        reaches next, a prompt sent and not yet done with counts as stopping.
        """
        if self.turn is not None and self.turn.stoppable:
            self.action_stop(key_time)
            return True
        if key_time is not None:
            self._idle_escape_at = max(self._idle_escape_at, key_time)
            return False
        return self._composer.locked or self.busy

    def claim_typed_key(self, key: events.Key | events.Paste) -> None:
        """Text, a paste or Enter while the message list (or nothing) has the focus: the composer's.

        Called as the key reaches the app, before it goes to the focused
        widget: the composer takes the focus, so the key and those read with
        it are typed there, and an Enter sends as in the composer (it never
        toggles a fold in the list).
        """
        if isinstance(key, events.Key) and not (key.is_printable or key.key == "enter"):
            return
        focused, messages = self.focused, self._messages
        if focused is None or focused is messages or messages in focused.ancestors:
            self.set_focus(self._composer)

    def _check_choice(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Whether Continue, Retry, Edit, a flip or Esc's end of an edit would act now.

        Not while a turn runs or wraps up (None: dimmed in the footer), but to
        edit a queued message, and but Continue, Retry and Edit while a stop
        wraps up: they act once it has (`_defer_while_stopping`).
        """
        if action == "edit_prompt" and self._queue.first is not None:
            return True  # Ctrl+E edits the last queued message first.
        if self.busy:
            if action in AFTER_STOP and self._stopping():
                return True
            return False if action == "cancel_edit" else None
        if action == "cancel_edit":
            return self.editing is not None and not self._focus_binds_escape()
        step = parameters[0] if parameters else 0
        return True if can_choose(self.conversation, self.versions, action, step) else None

    async def action_continue_reply(self) -> None:
        """Ctrl+G: the model goes on with the last reply from exactly where it stopped."""
        if self._defer_while_stopping("continue_reply"):
            return
        if (response := continue_target(self.conversation)) is not None and not self.busy:
            await self.start_turn(Continue(response), key_time=self.key_time)

    async def action_retry(self) -> None:
        """Ctrl+R: the last reply again; the old one stays, as a version (Alt+Left shows it)."""
        if self._defer_while_stopping("retry"):
            return
        if (prompt := retryable(self.conversation)) is not None and not self.busy:
            await self.start_turn(Retry(prompt), key_time=self.key_time)

    def _stopping(self) -> bool:
        """Whether the turn is wrapping up a stop asked for (Esc): its reply is about to be kept."""
        return self.busy and self.turn is not None and self.turn.token.requested

    def _defer_while_stopping(self, action: str) -> bool:
        """While a stop wraps up, keep `action` to take once it has (True); else False.

        Esc then Ctrl+G (in one read, say) means: stop, then go on. The reply
        cannot be continued, retried or edited before it is stored as stopped.
        """
        if not self._stopping():
            return False
        self._after_stop = (action, self.key_time)
        return True

    async def _take_choice_after_stop(
        self, action: str, key_time: float | None, conversation: Conversation
    ) -> None:
        """The stop is wrapped up: take the choice made meanwhile, if still in its conversation.

        As from its key: an Esc read with it or after it stops the turn it starts.
        """
        if self.conversation is not conversation or self._leaving or self.session.quitting:
            return
        self.key_time = key_time
        try:
            await self.run_action(action)
        finally:
            self.key_time = None

    def action_edit_prompt(self) -> None:
        """Ctrl+E: the last prompt in the composer, to send as a new version; again, the one before.

        What the composer held stays: Ctrl+Z brings it back, and Esc ends the
        edit with it. A queued message is edited first (the last one).
        """
        if self._take_back(None) or self._defer_while_stopping("edit_prompt"):
            return
        composer = self._composer
        edit = next_edit(self.conversation.items, self.editing, composer.text)
        if edit is None or self.busy:
            return
        self.editing, last = edit
        composer.recall(self.editing.prompt.text)
        self._banner.show(last=last)
        self.set_focus(composer)

    def action_cancel_edit(self) -> None:
        """Esc while editing, with no turn running: no edit, and the composer's text from before."""
        editing, self.editing = self.editing, None
        self._banner.hide()
        if editing is not None:
            self._composer.put_back(editing.before)

    async def action_version(self, step: int) -> None:
        """Alt+Left (-1), Alt+Right (+1): the previous or next version of the last exchange.

        The history follows: the next turn sends the version shown.
        """
        conversation, target = self.conversation, self.versions.target(step)
        if target is None or self.busy:
            return
        conversation.select(target.id)
        try:
            self.session.store.set_leaf(conversation.id, conversation.leaf)
        except sqlite3.Error as error:
            self._warn(f"The version shown could not be stored for the next start: {error}")
        await self.show_conversation(conversation)
        self._composer.prompts = [i.text for i in conversation.items if isinstance(i, UserPrompt)]

    # The queue: messages typed while a turn runs (`MessageQueue`, shown in the QueuePanel)

    def take_last_queued(self) -> str | None:
        """Take the last queued message out of the queue (store and panel); its text, or None.

        The caller puts the text in the composer (Ctrl+E does), whose draft is
        then stored as soon as the caller is done: the message goes from the
        queue to the stored draft, never lost. None if nothing is queued, or if
        the store could not take it out (then it stays queued, and the user is
        told).
        """
        return self._take_queued(None)

    async def action_send_queued(self) -> None:
        """Ctrl+S: send the first queued message now, when no turn runs (else it waits its turn)."""
        ask = self._queue.next_prompt()
        if ask is None or self.busy or self.session.quitting:
            return
        await self.start_turn(ask)

    def on_queue_panel_take_back(self, message: QueuePanel.TakeBack) -> None:
        """A click on a queued message's ✕: back into the composer, before what is there."""
        self._take_back(message.message_id)

    def _take_back(self, message_id: str | None) -> bool:
        """A queued message (None: the last) into the composer to edit; False if none is queued.

        What the composer held stays after it. Sent again with Enter: queued
        again (at the end) while a turn runs, else sent. Out of the queue,
        into the draft: stored either way.
        """
        text = self._take_queued(message_id)
        if text is None:
            return False
        self._composer.restore(text)
        self.drafts.save()
        self.set_focus(self._composer)
        return True

    def _take_queued(self, message_id: str | None) -> str | None:
        taken = self._queue.take(message_id)
        if taken is not None:
            self.call_later(self.drafts.save)  # Once the caller has put it in the composer.
        self.refresh_bindings()
        return None if taken is None else taken.text

    async def _send_queued_after(self, turn: Turn, outcome: TurnOutcome) -> None:
        """The turn is over: if its reply completed, the first queued message goes next.

        Not after a stop or a failure: they stay, and the panel says how to
        send them. Nor when the user asked for a stop meanwhile (an Esc since
        the key that asked for this turn, even one too late to stop it), nor
        while the screen leaves the conversation or quits. Decided and started
        with no await in between: a Ctrl+S or an Enter meanwhile finds a turn
        running (`busy`), so no message is sent twice.
        """
        if self.turn is not turn:
            return
        held = (
            turn.token.requested
            or self._idle_escape_at >= self._sent_at
            or self._leaving
            or self.session.quitting
        )
        if (ask := self._queue.turn_ended(outcome, held=held)) is not None:
            await self.start_turn(ask)
        self.refresh_bindings()

    def _show_choices(self) -> None:
        """Label the versions on screen, find where a flip goes, hint at the last reply's choices.

        An edit whose prompt is no longer shown ends (its text stays in the composer).
        """
        widgets, conversation = self._messages.items, self.conversation
        self.versions.refresh(conversation, widgets)
        show_hints(conversation, widgets, running=self.turn is not None and not self.turn.ended)
        if self.editing is not None and self.editing.prompt not in conversation.items:
            self.editing = None
            self._banner.hide()

    def action_scroll_conversation(self, key: str) -> None:
        """PageUp, PageDown, Home or End in the composer: scroll the conversation.

        Unless the composer has use for the key (`Composer.wants_key`: a draft
        of several lines); End also follows the newest reply again.
        """
        composer, messages = self._composer, self._messages
        if self.focused is not composer or composer.wants_key(key):
            raise SkipAction()
        if key == "pageup":
            messages.scroll_page_up(animate=False)
        elif key == "pagedown":
            messages.scroll_page_down(animate=False)
        elif key == "home":
            messages.scroll_home(animate=False)
        else:
            messages.follow()

    async def action_show_earlier(self) -> None:
        """Mount the whole conversation, however long."""
        if self.hidden_items and not self.busy:
            await self.show_conversation(self.conversation, everything=True)
            self._messages.scroll_home(animate=False)

    def action_switch_model(self) -> None:
        """The model switcher: the provider and model for the next turns."""
        self.run_worker(self._open_switcher(), group="switcher", exclusive=True)

    async def _open_switcher(self) -> None:
        """Each provider is made first, on a thread: importing an SDK takes up to a
        second, which on the loop would hold every key and frame meanwhile."""
        from chatui.screens.model_switcher import ModelSwitcher

        session = self.session
        await session.make_providers(session.choices())
        choices = [(choice, session.unavailable(choice)) for choice in session.choices()]
        own = session.model_of(self.conversation)
        self.app.push_screen(ModelSwitcher(choices, session.choice, own=own), self.switch_model)

    async def switch_model(self, choice: ModelChoice | None) -> None:
        """Answer from the next turn on with `choice` (a running reply keeps its model).

        It becomes the open conversation's own model: opening it again answers with it.
        """
        if choice is None:
            return
        if choice != self.session.choice:
            try:
                self.session.switch(choice)
            except NoProvider as problem:
                self.notify(str(problem), severity="error", markup=False)
                return
            self._answer_with_the_new_model()
            self._show_welcome()
        try:
            self.session.keep_model(self.conversation)
        except SessionError as error:
            self._tell(error)

    def _answer_with_the_new_model(self) -> None:
        """The session switched model: show it, and prepare it (a local model loads)."""
        status = self._status
        status.provider, status.model = self.session.provider_label()
        self.session.begin_prepare(self.show_loading)
        self.app.run_worker(self.prepare_provider(), group="prepare")

    async def prepare_provider(self) -> None:
        """Make (if deferred) and prepare the provider, with progress in the status bar."""
        session = self.session
        making = session.provider is None and session.has_provider  # Deferred: made now.
        try:
            await session.prepare(self.show_loading)
            if making and (notice := session.startup_notice) and self._welcome is None:
                await self.show_error(notice)  # It could not be made (the welcome says why).
        except ProviderError as error:
            await self.show_error(str(error))
        finally:
            status = self._status
            status.provider, status.model = self.session.provider_label()

    async def action_new_conversation(self) -> None:
        await self.open_conversation(None)

    def action_conversations(self) -> None:
        """The conversation list: open, start, rename or delete a conversation."""
        from chatui.screens.conversations import NEW, ConversationList

        async def chosen(conversation_id: str | None) -> None:
            current = self.conversation.id
            if conversation_id == NEW:
                await self.open_conversation(None)
            elif conversation_id is not None and conversation_id != current:
                await self.open_conversation(conversation_id)
            elif not self.session.exists(current):
                await self.open_conversation(None)  # The open one was deleted.

        conversations = ConversationList(
            self.session.store, self.conversation.id, self.delete_conversation
        )
        self.app.push_screen(conversations, chosen)

    # Conversations

    async def open_conversation(
        self, conversation_id: str | None, *, branch_before: UserPrompt | None = None
    ) -> None:
        """Switch to a stored conversation, or to a new one for None (see Session).

        `branch_before`: to a new conversation branched from the open one before
        that prompt (`Session.fork`), to send an edit of it there.

        The draft stays with the conversation it was written in, with every
        key typed before the switch, and the opened one's comes back. A draft
        that could not be stored, or whose conversation was deleted, comes
        along, after the opened one's own. The status bar starts afresh. Keys
        that would act on a conversation do nothing meanwhile (`NOT_WHILE_SWITCHING`).
        The collector's full passes wait until the opened one is drawn (as in
        `show_conversation`), its loading included.
        """
        self._switching = True
        try:
            with self._full_passes_wait():
                await self._switch(conversation_id, branch_before)
        finally:
            self._switching = False
        self.refresh_bindings()

    async def _switch(self, conversation_id: str | None, branch_before: UserPrompt | None) -> None:
        await self.stop_and_wait()
        await self._typed_keys_arrived()
        stored = self.drafts.save()
        left = self.conversation.id
        with self.drafts.paused():  # Until the opened one's draft is in the composer.
            try:
                if branch_before is not None:
                    conversation = await self.session.fork(self.conversation, branch_before)
                else:
                    conversation = await self.session.open_conversation(
                        conversation_id, self.conversation
                    )
                before = self.session.choice
                self.session.adopt_conversation_settings(conversation)  # Its own model.
                if self.session.choice != before:
                    self._answer_with_the_new_model()
                await self.show_conversation(conversation)
                if conversation.id != left:
                    carry = not stored or not self.session.exists(left)
                    self.drafts.load(conversation, carry=carry)
            except SessionError as error:
                self._tell(error)
                return
        status = self._status
        if status.state is not Phase.LOADING:
            status.state, status.detail = Phase.IDLE, ""
        status.stop_ms, status.response, status.context = None, None, None
        self.set_focus(self._composer)

    async def _typed_keys_arrived(self) -> None:
        """Let the keys on their way to the composer reach it (those read before a switch).

        Textual hands each key to the focused widget's own queue; a key read
        with Ctrl+N, before it, may still be there when the switch begins.
        """
        arrived = asyncio.Event()
        if self._composer.call_later(arrived.set):
            await arrived.wait()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """The composer's text changed: store it once typing pauses.

        An edit whose text from before is back (Ctrl+Z, Down) is given up; not
        once Enter sent it (the composer, locked, shows that text again).
        """
        if event.text_area is not self._composer or not self.drafts.ready:
            return
        editing, composer = self.editing, self._composer
        back = editing is not None and editing.before.strip() and composer.text == editing.before
        if back and not composer.locked:
            self.editing = None
            self._banner.hide()
        self.drafts.changed()

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a stored conversation; the open one's turn is stopped and stored first."""
        if conversation_id == self.conversation.id:
            await self.stop_and_wait()
        try:
            self.session.delete_conversation(conversation_id)
        except SessionError as error:
            self._tell(error)

    async def stop_and_wait(self) -> None:
        """Cancel the running turn, if any, and wait until it has stored its outcome.

        Nothing queued is sent meanwhile, even if the reply completes: the
        screen is leaving the conversation, or quitting.
        """
        self._leaving = True
        self._after_stop = None  # A choice made for the conversation being left goes with it.
        try:
            if self.turn is not None:
                self.action_stop()
            if self._turn_task is not None:
                with contextlib.suppress(Exception):  # Its failure was shown where it happened.
                    await asyncio.shield(self._turn_task)
        finally:
            self._leaving = False

    # Helpers

    def _focus_binds_escape(self) -> bool:
        """Whether the focused widget or a container of it binds Esc (a dropdown, say)."""
        return focus_chain_binds(self, self.focused, "escape")

    def _warn(self, text: str) -> None:
        """Tell the user what went wrong, and what became of their text (a sentence, literally)."""
        self.notify(text, severity="warning", markup=False)

    def _tell(self, error: SessionError) -> None:
        """Show what the session could not do (its text literally)."""
        severity: SeverityLevel = "warning" if isinstance(error, ConversationRefused) else "error"
        self.notify(str(error), severity=severity, markup=False)

    async def _mount(self, widget: Static | AssistantMessage) -> None:
        await self._messages.mount(widget)
