"""The chat screen: the conversation, the composer, the status bar, and Esc.

The screen composes and sends prompts, opens conversations and keeps drafts;
each turn it starts is shown by a `TurnView` of its own (`turn_view.py`: the
replies, the approvals, the status line's phase, the stop drawn), which the
screen asks to draw the stop when Esc cancels the turn.

Nothing the user writes is lost: the composer's draft is stored with its
conversation (a moment after typing stops, and at once on a switch and on
quitting) and comes back when the conversation is opened again; a draft the
store cannot keep stays in the composer, across switches; text typed or
pasted while the focus is on the message list goes to the composer; PageUp,
PageDown, Home and End scroll the conversation from the composer when the
composer has no use for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3

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
from chatui.providers.base import ProviderError
from chatui.providers.registry import ModelChoice
from chatui.screens.conversations import NEW, ConversationList
from chatui.screens.model_switcher import ModelSwitcher
from chatui.screens.turn_view import TurnView, show_results
from chatui.session import ConversationRefused, NoProvider, Session, SessionError
from chatui.turn import Turn, TurnOutcome
from chatui.widgets.chat_message import (
    AssistantMessage,
    ContextDivider,
    ErrorNotice,
    UserMessage,
)
from chatui.widgets.composer import BUSY_NOTICE, Composer
from chatui.widgets.message_list import MessageList, MoreBelow
from chatui.widgets.status_bar import Phase, StatusBar
from chatui.widgets.welcome import Welcome

SHOWN_ITEMS = 40
DRAFT_SAVE_DELAY = 1.0  # Seconds after the last change to the draft that it is stored.


class ChatScreen(EscapeFirstScreen[None]):
    """One conversation at a time; Esc stops the running turn."""

    BINDINGS = [
        # Esc usually stops a turn before it is even queued (ChatApp.post_message,
        # through stop_for_escape). This binding shows it in the footer, and takes a
        # key posted from another thread: priority, so that the key stops the turn
        # before visiting the focused widget and bubbling back. check_action lets Esc
        # through to a focused widget that binds Esc itself, and when no turn runs.
        Binding("escape", "stop", "Stop", priority=True),
        Binding("ctrl+r", "recall", "Recall prompt"),
        # Priority: taken as they arrive, before keys typed after them reach the composer
        # (Ctrl+N, text, Enter in one read sends the text in the new conversation).
        Binding("ctrl+n", "new_conversation", "New", priority=True),
        Binding("ctrl+o", "conversations", "Conversations", priority=True),
        # Not in the footer, which is full at 80 columns: the empty conversation and
        # the command palette name it.
        Binding("ctrl+l", "switch_model", "Model", show=False, priority=True),
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
        self.recallable: str | None = None
        self.hidden_items = 0
        self._gc_hold: FullCollectionHold | None = None
        self._idle_escape_at = -math.inf  # When an Esc last found no turn to stop.
        self._welcome: Welcome | None = None  # Shown while the conversation is empty.
        self._approved: dict[str, set[str]] = {}  # Tools approved for each conversation.
        self._drafts_ready = False  # The open conversation's draft is in the composer.
        self._saved_draft: tuple[str, str] | None = None  # (conversation id, draft) last stored.
        self.draft_error: str | None = None  # Why the last try to store the draft failed.
        self._draft_timer: asyncio.TimerHandle | None = None  # The debounced save.

    def compose(self) -> ComposeResult:
        yield MessageList(id="messages")
        yield MoreBelow()
        yield Composer()
        yield StatusBar(id="status")
        yield KeyFooter()

    async def on_mount(self) -> None:
        self._status = self.query_one(StatusBar)
        self._messages = self.query_one(MessageList)
        self._composer = self.query_one(Composer)
        self._status.provider, self._status.model = self.session.provider_label()
        self.session.begin_prepare(self.show_loading)  # The app shows how it ends.
        self.watch(self._messages, "more_below", self._show_more_below)
        await self.show_conversation(self.conversation)
        self._load_draft()
        self._composer.focus()

    def on_unmount(self) -> None:
        self.save_draft()  # However the app ends.
        if self.turn is not None:
            self.turn.cancel()  # However the app ends, a running turn stops the same way.
        if self._gc_hold is not None:
            self._gc_hold.release()  # No refresh comes any more.

    # Conversation display

    async def show_conversation(
        self, conversation: Conversation, *, everything: bool = False
    ) -> None:
        """Replace the message list with `conversation`'s items.

        Only the last `SHOWN_ITEMS` items are mounted unless `everything`: the
        layout cost of every frame grows with the number of mounted widgets,
        and a long history must not slow down the reply that is streaming.
        """
        self.conversation = conversation
        messages = self._messages
        items = conversation.items
        hidden = 0 if everything else max(0, len(items) - SHOWN_ITEMS)
        widgets: list[Static | AssistantMessage] = []
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
        self._show_welcome()
        show_results(items, views)
        messages.anchor()
        self.recallable = _recallable_prompt(conversation)
        self.refresh_bindings()

    def _show_more_below(self, shown: bool) -> None:
        self.query_one(MoreBelow).display = shown

    def _show_welcome(self) -> None:
        """Fill the empty conversation's page, then learn (maybe by a probe) if it can answer."""
        if self._welcome is None:
            return
        who = self.session.provider_label() if self.session.provider is not None else None
        self._welcome.show(who, None, checking=True)
        self.run_worker(self._check_provider(self._welcome, who), group="check", exclusive=True)

    async def _check_provider(self, welcome: Welcome, who: tuple[str, str] | None) -> None:
        problem = await self.session.problem()
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
        if self.busy:  # The composer locks itself, so this is a second line of defence.
            composer.restore(message.text)
            self.notify(BUSY_NOTICE, severity="warning", markup=False)
            return
        # The turn exists from the moment the prompt is accepted, before any await:
        # an Esc from here on stops it, even before it runs.
        view = TurnView(
            self,
            self.conversation,
            messages=self._messages,
            status=self._status,
            composer=composer,
            approved=self._approved.setdefault(self.conversation.id, set()),
            stop=self.action_stop,
        )
        try:
            turn = self.session.new_turn(self.conversation, message.text, observer=view)
        except NoProvider as problem:
            composer.restore(message.text)
            composer.unlock()
            await self._mount(ErrorNotice(str(problem)))
            return
        self.turn, self.turn_view = turn, view
        self.recallable = None
        composer.prompts.append(message.text)
        if (welcome := self._welcome) is not None:
            self._welcome = None
            welcome.display = False  # At once; removed below, after the prompt is placed.
        prompt = UserMessage(message.text, turn.prompt.id)
        prompt_shown = self._messages.mount(prompt)  # Placed before the reply.
        self._messages.follow()  # The prompt and its reply in sight, even if scrolled up.
        self._messages.receiving = True
        self._turn_task = asyncio.create_task(self._run_turn(turn))
        view.begin()
        if message.key_time <= self._idle_escape_at:
            self.action_stop()  # An Esc that came after this Enter, before the turn existed.
        self.refresh_bindings()
        await prompt_shown
        if welcome is not None:
            await welcome.remove()

    async def _run_turn(self, turn: Turn) -> None:
        # The full pass held off during the turn waits for the turn's last frame:
        # run at the reply's end, it would hold that frame back by up to 0.4 s.
        self._gc_hold = hold = FullCollectionHold()
        try:
            outcome = await turn.run()
            try:
                await self._show_outcome(turn, outcome)
            except Exception as error:  # A bug of ours: say so, and keep the app usable.
                await self.show_error(f"chatui could not show how the reply ended: {error!r}")
                self._status.state = Phase.FAILED
        finally:
            self.call_after_refresh(hold.release)
            if self.turn is turn:
                self._composer.unlock()
                self._messages.receiving = False

    async def _show_outcome(self, turn: Turn, outcome: TurnOutcome) -> None:
        """The turn has ended: its view shows how, then the screen and the session wrap up."""
        view = self.turn_view
        assert view is not None  # Set with `turn`, before it ran.
        await view.show_outcome(outcome, provider=self.session.provider_label()[0])
        if outcome.refused:
            self.refresh_bindings()
            self.session.turn_finished(turn, outcome)  # Nothing to title: it was not kept.
            return
        if outcome.state is not ResponseState.COMPLETE:
            self.recallable = outcome.prompt.text
        if len(self._messages.items) > 2 * SHOWN_ITEMS:
            await self.show_conversation(self.conversation)  # Keep the layout small.
        self.refresh_bindings()
        try:
            self.session.turn_finished(turn, outcome)
        except SessionError as error:
            self._tell(error)

    # Actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # None, not False: the key stays in the footer, dimmed, so the footer keeps
        # the same keys from turn to turn (and Esc still reaches popups and inputs).
        if action == "stop":
            stoppable = self.turn is not None and self.turn.stoppable
            return True if stoppable and not self._focus_binds_escape() else None
        if action == "recall":
            return True if self.recallable is not None else None
        if action == "show_earlier":
            return bool(self.hidden_items) and not self.busy
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
        return self._composer.locked

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

    def action_recall(self) -> None:
        """Show the last interrupted or failed prompt in the composer, again and again.

        What the composer held stays: Ctrl+Z or Down brings it back.
        """
        if self.recallable is None:
            return
        self._composer.recall(self.recallable)
        self.set_focus(self._composer)

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
        session = self.session
        choices = [(choice, session.unavailable(choice)) for choice in session.choices()]
        self.app.push_screen(ModelSwitcher(choices, session.choice), self.switch_model)

    async def switch_model(self, choice: ModelChoice | None) -> None:
        """Answer from the next turn on with `choice` (a running reply keeps its model)."""
        if choice is None or choice == self.session.choice:
            return
        try:
            self.session.switch(choice)
        except NoProvider as problem:
            self.notify(str(problem), severity="error", markup=False)
            return
        status = self._status
        status.provider, status.model = self.session.provider_label()
        self.session.begin_prepare(self.show_loading)
        self._show_welcome()
        self.app.run_worker(self.prepare_provider(), group="prepare")

    async def prepare_provider(self) -> None:
        """Prepare the provider (load a local model) with progress in the status bar."""
        try:
            await self.session.prepare(self.show_loading)
        except ProviderError as error:
            await self.show_error(str(error))

    async def action_new_conversation(self) -> None:
        await self.open_conversation(None)

    def action_conversations(self) -> None:
        """The conversation list: open, start, rename or delete a conversation."""

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

    async def open_conversation(self, conversation_id: str | None) -> None:
        """Switch to a stored conversation, or to a new one for None (see Session).

        The draft stays with the conversation it was written in, with every
        key typed before the switch, and the opened one's comes back. A draft
        that could not be stored, or whose conversation was deleted, comes
        along, after the opened one's own. The status bar starts afresh.
        """
        await self.stop_and_wait()
        await self._typed_keys_arrived()
        stored = self.save_draft()
        left = self.conversation.id
        # Until the opened one's draft is in the composer, no save runs: one due now
        # would store the draft being left as the opened conversation's.
        self._drafts_ready = False
        try:
            conversation = await self.session.open_conversation(conversation_id, self.conversation)
            await self.show_conversation(conversation)
            if conversation.id != left:
                self._load_draft(carry=not stored or not self.session.exists(left))
        except SessionError as error:
            self._tell(error)
            return
        finally:
            self._drafts_ready = True
        status = self._status
        if status.state is not Phase.LOADING:
            status.state, status.detail = Phase.IDLE, ""
        status.stop_ms, status.response, status.context = None, None, None
        self.set_focus(self._composer)

    # Drafts

    def save_draft(self) -> bool:
        """Store the composer's draft as the open conversation's, now; False if the store failed.

        A failure is told once, until a draft is stored again. Meanwhile the
        text stays in the composer: it comes along to the next conversation
        opened, and quitting prints it (`unsaved_draft`).
        """
        if self._draft_timer is not None:
            self._draft_timer.cancel()
            self._draft_timer = None
        if not self._drafts_ready:
            return True
        saved = (self.conversation.id, self._composer.draft)
        if saved == self._saved_draft:
            return True
        try:
            self.session.store.save_draft(*saved)
        except sqlite3.Error as error:
            if self.draft_error is None:
                self.notify(
                    f"Your draft could not be stored: {error}. It stays in the composer.",
                    severity="warning",
                    markup=False,
                )
            self.draft_error = str(error)
            return False
        self._saved_draft, self.draft_error = saved, None
        return True

    @property
    def unsaved_draft(self) -> str | None:
        """The draft the store failed to keep at the last try, or None."""
        if self.draft_error is None or not self._composer.draft.strip():
            return None
        return self._composer.draft

    async def _typed_keys_arrived(self) -> None:
        """Let the keys on their way to the composer reach it (those read before a switch).

        Textual hands each key to the focused widget's own queue; a key read
        with Ctrl+N, before it, may still be there when the switch begins.
        """
        arrived = asyncio.Event()
        if self._composer.call_later(arrived.set):
            await arrived.wait()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """The composer's text changed: store it once typing pauses."""
        if event.text_area is not self._composer or not self._drafts_ready:
            return
        if self._draft_timer is not None:
            self._draft_timer.cancel()
        loop = asyncio.get_running_loop()
        self._draft_timer = loop.call_later(DRAFT_SAVE_DELAY, self.save_draft)

    def _load_draft(self, *, carry: bool = False) -> None:
        """Put the open conversation's draft in the composer; `carry`: the composer's after it."""
        conversation = self.conversation
        prompts = [item.text for item in conversation.items if isinstance(item, UserPrompt)]
        carried = self._composer.draft if carry else ""
        try:
            own = self.session.store.load_draft(conversation.id)
        except sqlite3.Error as error:
            self.notify(
                f"The conversation's draft could not be read: {error}",
                severity="warning",
                markup=False,
            )
            own = ""
        draft = own
        if carried.strip() and carried != own:
            draft = f"{own}\n{carried}" if own.strip() else carried
        self._composer.load_draft(draft, prompts)
        self._drafts_ready = True
        self._saved_draft = (conversation.id, own)
        if draft != own:
            self.save_draft()

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a stored conversation; the open one's turn is stopped and stored first."""
        if conversation_id == self.conversation.id:
            await self.stop_and_wait()
        try:
            self.session.delete_conversation(conversation_id)
        except SessionError as error:
            self._tell(error)

    async def stop_and_wait(self) -> None:
        """Cancel the running turn, if any, and wait until it has stored its outcome."""
        if self.turn is not None:
            self.action_stop()
        if self._turn_task is not None:
            with contextlib.suppress(Exception):  # Its failure was shown where it happened.
                await asyncio.shield(self._turn_task)

    # Helpers

    def _focus_binds_escape(self) -> bool:
        """Whether the focused widget or a container of it binds Esc (a dropdown, say)."""
        return focus_chain_binds(self, self.focused, "escape")

    def _tell(self, error: SessionError) -> None:
        """Show what the session could not do (its text literally)."""
        severity: SeverityLevel = "warning" if isinstance(error, ConversationRefused) else "error"
        self.notify(str(error), severity=severity, markup=False)

    async def _mount(self, widget: Static | AssistantMessage) -> None:
        await self._messages.mount(widget)


def _recallable_prompt(conversation: Conversation) -> str | None:
    """The last prompt, if the reply to it did not complete."""
    last_prompt: str | None = None
    ended = ResponseState.COMPLETE
    for item in conversation.items:
        if isinstance(item, UserPrompt):
            last_prompt, ended = item.text, ResponseState.INTERRUPTED
        elif isinstance(item, ModelResponse):
            ended = item.state
    return last_prompt if ended is not ResponseState.COMPLETE else None
