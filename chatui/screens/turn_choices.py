"""What the user can do with the last exchange on screen: continue, retry, edit, flip versions.

The chat screen binds the keys (Ctrl+G, Ctrl+R, Ctrl+E, Alt+Left and
Alt+Right); this module says what each may do now and where it goes: the
reply a marker suggests continuing or retrying, the version each exchange
shows ("2/3"), the version a flip shows next, and the commands the
palette offers. What it reads is the conversation's shown path
(`Conversation.items`); what runs is a turn (`chatui.turn_kinds`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.app import SystemCommand
from textual.screen import Screen
from textual.widget import Widget

from chatui.messages import Conversation, Item, ModelResponse, ResponseState, UserPrompt
from chatui.turn_kinds import (
    NewPrompt,
    Retry,
    TurnAsk,
    continuable,
    exchange_versions,
    last_prompt,
    retryable,
    shown_version,
)
from chatui.widgets.chat_message import AssistantMessage, ContextDivider, UserMessage
from chatui.widgets.versions import version_label

CONTINUE_HINT = "Ctrl+G continue"
RETRY_HINT = "Ctrl+R retry"

# (title, help, action): the palette's commands, each offered while its action applies.
COMMANDS = (
    ("Continue the reply", "Go on with the reply from where it stopped (Ctrl+G)", "continue_reply"),
    (
        "Retry the reply",
        "Generate the last reply again; the old one stays, as a version (Ctrl+R)",
        "retry",
    ),
    (
        "Edit the prompt",
        "Edit your last prompt and send it as a new version (Ctrl+E)",
        "edit_prompt",
    ),
    (
        "Previous version",
        "Show the previous version of the last exchange (Alt+Left)",
        "version(-1)",
    ),
    ("Next version", "Show the next version of the last exchange (Alt+Right)", "version(1)"),
)


@dataclass(frozen=True)
class Editing:
    """A prompt being edited in the composer (Ctrl+E), and the text Esc puts back."""

    prompt: UserPrompt
    before: str


def next_edit(
    items: Sequence[Item], editing: Editing | None, text: str
) -> tuple[Editing, bool] | None:
    """What Ctrl+E edits now, and whether it is the last prompt; None with no prompt.

    The last prompt; while one is edited, the one before it (a walk back).
    Esc puts back `text`, the composer's, as it was at the walk's first step.
    """
    prompts = [item for item in items if isinstance(item, UserPrompt)]
    if not prompts:
        return None
    at = len(prompts) - 1
    if editing is not None and editing.prompt in prompts:
        at = max(0, prompts.index(editing.prompt) - 1)  # Walk back.
    before = text if editing is None else editing.before
    return Editing(prompts[at], before), at == len(prompts) - 1


def turn_commands(screen: Screen[Any]) -> Iterator[SystemCommand]:
    """The palette's commands for the chat screen that apply now (as its keys would)."""
    for title, help_text, action in COMMANDS:
        name, _, argument = action.partition("(")
        parameters = (int(argument.rstrip(")")),) if argument else ()
        if screen.check_action(name, parameters) is True:
            yield SystemCommand(title, help_text, partial(screen.run_action, action))


def replaced_widgets(
    widgets: Sequence[Widget], ask: TurnAsk, view_start: str | None = None
) -> list[Widget]:
    """What a turn takes off the screen: a retried reply, or an edited prompt and its reply.

    Everything after the prompt's widget (the reply, its tool calls, a failure's
    notice), and for an edit the prompt too: the last exchange is replaced. An
    edited prompt where the model's view started (`view_start`) takes the
    divider above it along: the new version is not where the view starts (the
    turn places the divider again if its request must leave earlier items out).
    """
    if isinstance(ask, Retry):
        prompt, first = ask.prompt, 1
    elif isinstance(ask, NewPrompt) and ask.replaces is not None:
        prompt, first = ask.replaces, 0
    else:
        return []
    for n, widget in enumerate(widgets):
        if isinstance(widget, UserMessage) and widget.item_id == prompt.id:
            start = n + first
            above = widgets[n - 1] if n else None
            if first == 0 and prompt.id == view_start and isinstance(above, ContextDivider):
                start -= 1
            return list(widgets[start:])
    return []


def continue_target(conversation: Conversation) -> ModelResponse | None:
    """The reply Continue (Ctrl+G) goes on with: `continuable`, with text to go on from.

    A reply stopped before any of its text (before its first token, in its
    thinking, in a tool call's arguments) has none: the model would start
    afresh in it, dropping what was cut off. Retry does that and keeps the old
    one as a version.
    """
    response = continuable(conversation)
    return response if response is not None and response.text.strip() else None


def can_choose(
    conversation: Conversation, versions: Versions, action: str, step: object = 0
) -> bool:
    """Whether Continue, Retry, Edit or a flip (`step`) has something to act on in `conversation`.

    `action` is the key's: "continue_reply", "retry", "edit_prompt" or "version".
    """
    if action == "retry":
        return retryable(conversation) is not None
    if action == "continue_reply":
        return continue_target(conversation) is not None
    if action == "edit_prompt":
        return last_prompt(conversation.items) is not None
    return isinstance(step, int) and versions.target(step) is not None


def hints(conversation: Conversation, response: ModelResponse) -> str:
    """What the marker of `response` suggests: Continue and Retry, while they would act on it.

    Only the last reply: interrupted, both; failed, Retry; cut at the token
    limit, Continue. Continue only with text to go on from (else it is a retry).
    """
    items = conversation.items
    if not items or items[-1] is not response:
        return ""
    go_on = continue_target(conversation) is response
    again = retryable(conversation) is not None
    if response.state is ResponseState.INTERRUPTED:
        keys = [CONTINUE_HINT] if go_on else []
        return " · ".join(keys + ([RETRY_HINT] if again else []))
    if response.state is ResponseState.FAILED:
        return RETRY_HINT if again else ""
    return CONTINUE_HINT if go_on else ""


def show_hints(conversation: Conversation, widgets: Sequence[Widget], *, running: bool) -> None:
    """Give the last reply its hints (none while a turn runs); take them off the others."""
    for widget in widgets:
        if isinstance(widget, AssistantMessage):
            shown = "" if running else hints(conversation, widget.response)
            widget.show_hints(shown)


class Versions:
    """The versions of the conversation on screen: each exchange's label, and the flips.

    `refresh` after the path or the widgets changed; `previous` and `next` are
    what Alt+Left and Alt+Right show of the last exchange on screen that has
    versions (one among the earlier items not shown would take away, unseen,
    everything shown after it).
    """

    def __init__(self) -> None:
        self.previous: Item | None = None
        self.next: Item | None = None

    def target(self, step: int) -> Item | None:
        return self.previous if step < 0 else self.next

    def refresh(self, conversation: Conversation, widgets: Sequence[Widget]) -> None:
        """Label each shown exchange with versions, and find where a flip goes."""
        self.previous = self.next = None
        items = conversation.items
        # Every item off the path belongs to a version: none off it, none at all.
        has_versions = len(conversation.all_items()) > len(items)
        prompts = {w.item_id: w for w in widgets if isinstance(w, UserMessage)}
        replies = {id(w.response): w for w in widgets if isinstance(w, AssistantMessage)}
        shown: list[int] = []  # Where the exchanges on screen begin on the path.
        for at, prompt in enumerate(items):
            if not isinstance(prompt, UserPrompt):
                continue
            widget = prompts.get(prompt.id)
            after = items[at + 1] if at + 1 < len(items) else None
            reply = replies.get(id(after)) if isinstance(after, ModelResponse) else None
            if widget is None and reply is None:
                continue  # Not on screen (among the earlier items not shown).
            shown.append(at)
            label = None
            if has_versions and _versioned(conversation, at):
                label = version_label(*shown_version(conversation, prompt))
            if widget is not None:
                widget.border_subtitle = "" if reply is not None else (label or "")
            if reply is not None:  # Its prompt's widget may be among those not shown.
                reply.border_subtitle = label or ""
        if has_versions:
            self._find_flips(conversation, shown)

    def _find_flips(self, conversation: Conversation, on_screen: list[int]) -> None:
        items = conversation.items
        for at in reversed(on_screen):
            prompt = items[at]
            if isinstance(prompt, UserPrompt) and _versioned(conversation, at):
                versions = exchange_versions(conversation, prompt)
                shown, _ = shown_version(conversation, prompt)
                self.previous = versions[shown - 2] if shown > 1 else None
                self.next = versions[shown] if shown < len(versions) else None
                return


def _versioned(conversation: Conversation, at: int) -> bool:
    """Whether the exchange that the prompt at `at` on the path begins has other versions."""
    items = conversation.items
    if len(conversation.versions(items[at])) > 1:
        return True
    after = items[at + 1] if at + 1 < len(items) else None
    return isinstance(after, ModelResponse) and len(conversation.versions(after)) > 1
