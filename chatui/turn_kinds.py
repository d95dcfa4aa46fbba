"""What a turn is asked to do: send a new prompt, retry the last reply, or continue it.

After a stop the user chooses what comes next, and no key press discards
what they wrote: each choice is one of these, and `Turn` runs it with the same stop, store and
history rules as any turn. `continuable` and `retryable` say which choices
the conversation's path allows now, for the keys and the command palette.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatui.messages import (
    Conversation,
    Item,
    ModelResponse,
    ResponseState,
    UserPrompt,
    new_id,
)


@dataclass(frozen=True)
class NewPrompt:
    """Send `text` as a new prompt.

    `id` is the prompt's: a queued message's own, so that storing the prompt
    takes it off the queue in the same write (it is never sent twice).
    `replaces`: the conversation's last prompt, which this one is a new
    version of (Edit): the old prompt and its replies stay, as a version.
    """

    text: str
    id: str = field(default_factory=new_id)
    replaces: UserPrompt | None = None


@dataclass(frozen=True)
class Retry:
    """Generate the reply to `prompt` (the last prompt) again; the old one stays, as a version."""

    prompt: UserPrompt


@dataclass(frozen=True)
class Continue:
    """Go on with `response` (the last reply, cut short) from exactly where it stopped.

    It stays one response: the new text is appended to it. Its tool calls
    (none of which ran) are dropped; it resumes from its text.
    """

    response: ModelResponse


TurnAsk = NewPrompt | Retry | Continue


def last_prompt(items: list[Item]) -> UserPrompt | None:
    """The last prompt on the path, if any."""
    return next((item for item in reversed(items) if isinstance(item, UserPrompt)), None)


def continuable(conversation: Conversation) -> ModelResponse | None:
    """The reply Continue would go on with: the last item, if it stopped short.

    Stopped short: interrupted (by the user, or chatui quitting), failed
    after some text arrived (a dropped connection), or complete but cut at
    the token limit. A reply whose tool calls ran is not one: its work
    went on past its text.
    """
    items = conversation.items
    last = items[-1] if items else None
    if not isinstance(last, ModelResponse):
        return None
    if last.state is ResponseState.INTERRUPTED:
        return last
    if last.state is ResponseState.FAILED:
        return last if last.text.strip() else None
    if last.state is ResponseState.COMPLETE and last.finish_reason == "length":
        return last
    return None


def retryable(conversation: Conversation) -> UserPrompt | None:
    """The prompt whose reply Retry would generate again: the last one, once it has any reply.

    Also after a failure or a stop before the first token: the prompt is on
    the path with no reply, or a failed one.
    """
    items = conversation.items
    prompt = last_prompt(items)
    if prompt is None:
        return None
    after = items[items.index(prompt) + 1 :]
    if after or isinstance(items[-1], UserPrompt):
        return prompt
    return None


def exchange_versions(conversation: Conversation, prompt: UserPrompt) -> list[Item]:
    """The versions of the exchange `prompt` (on the path) begins, oldest first.

    For each version of the prompt (Edit makes one), each first reply to it
    (Retry makes one), or the prompt alone while it has none. Flipping
    through them shows one at a time (`Conversation.select`); the history
    sends the one shown.
    """
    versions: list[Item] = []
    for version in conversation.versions(prompt):
        replies = conversation.children_of(version.id)
        versions += [item for item in replies if isinstance(item, ModelResponse)] or [version]
    return versions


def shown_version(conversation: Conversation, prompt: UserPrompt) -> tuple[int, int]:
    """Which version of `prompt`'s exchange is shown, of how many: (2, 3) reads "2/3"."""
    items = conversation.items
    at = items.index(prompt)
    shown = items[at + 1] if at + 1 < len(items) else prompt
    versions = [item.id for item in exchange_versions(conversation, prompt)]
    return (versions.index(shown.id) + 1 if shown.id in versions else 1), len(versions)
