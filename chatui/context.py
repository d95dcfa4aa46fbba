"""Fitting a conversation into the model's context window.

A request holds the system prompt, the history in view, the tools, and must
leave room for the reply (the provider's `reply_room`, its max_tokens), so a
reply is never cut short by a full context. When it would not fit, the view
start moves forward to a later user prompt: whole exchanges are left out, so a
tool call always goes with its result, and never the system prompt or the new
prompt. The move frees at least a quarter of the window at once (the start
goes to the earliest prompt that does) and the start then stays put until a
request no longer fits: the requests between two trims share one prefix, which
the local KV cache and the providers' prompt caches reuse. Only a window that
grew (a larger `n_ctx`, a larger model: half of it is free) moves the start
back, to the earliest prompt that again leaves a quarter free. The store keeps
everything; only what is sent changes.

The plan is deterministic: the same items, view start and token counts give
the same start. Token counts are the provider's (exact for the local model,
estimated for a remote one); an estimate from the items' characters only
chooses where to start counting, and real counts decide.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chatui.history import ChatMessage
from chatui.messages import Item, ModelResponse, ResponseState, ToolResult, UserPrompt
from chatui.providers.base import ContextOverflow, ProviderLifecycle

TRIM_SHARE = 4  # A trim frees at least 1/TRIM_SHARE of the window.


class DoesNotFit(Exception):
    """Even the newest exchange alone leaves no room for the reply."""

    def __init__(self, tokens: int, limit: int, window: int) -> None:
        super().__init__(f"{tokens} tokens, {limit} allowed of a {window}-token window")
        self.tokens, self.limit, self.window = tokens, limit, window


@dataclass(frozen=True)
class Fit:
    """What to send: the view start, its history, and its size in tokens."""

    view_start: str | None
    messages: list[ChatMessage]
    tokens: int


Build = Callable[[str | None], list[ChatMessage]]
Count = Callable[[list[ChatMessage]], Awaitable[int]]


async def fit_history(
    items: Sequence[Item],
    view_start: str | None,
    *,
    build: Build,
    count: Count,
    window: int,
    reply_room: int,
) -> Fit:
    """The history to send from `view_start` on, or from another prompt if it must move.

    `build(start)` gives the history from a start, `count(messages)` its size
    in tokens. The start moves forward when the request does not fit, and back
    when a trimmed one leaves half the window free (the window grew: a larger
    `n_ctx`, a larger model); either way to the earliest prompt from which the
    history leaves a quarter free. Raises `DoesNotFit` when not even the last
    exchange fits.
    """
    limit = window - reply_room
    target = max(limit - window // TRIM_SHARE, 0)
    counted: dict[int, Fit] = {}
    ids = [None, *(item.id for item in items[1:])]  # Index 0: the whole conversation.
    at = next((n for n, i in enumerate(ids) if i is not None and i == view_start), 0)

    async def fit_from(n: int) -> Fit:
        if n not in counted:
            messages = build(ids[n])
            counted[n] = Fit(ids[n], messages, await count(messages))
        return counted[n]

    current = await fit_from(at)
    fits = current.tokens <= limit
    # Trimmed, it goes back only if half the window is free: never for an estimate that
    # changed a little (the prefix stays), always for a window that grew.
    if fits and (at == 0 or current.tokens > target - window // TRIM_SHARE):
        return current
    # Estimated tokens each start leaves out, from the items' characters.
    per_char = current.tokens / max(sum(map(_chars, items[at:])), 1)
    before = list(itertools.accumulate((_chars(item) * per_char for item in items), initial=0.0))
    prompts = [n for n, item in enumerate(items) if isinstance(item, UserPrompt) and n > 0]
    starts = [n for n in [0, *prompts] if n < at] if fits else [n for n in prompts if n > at]

    def estimate(n: int) -> float:
        return current.tokens + before[at] - before[n]

    guess = next((k for k, n in enumerate(starts) if estimate(n) <= target), None)
    if guess is None:
        if fits:  # Nothing earlier would leave a quarter free: the view stays.
            return current
        guess = len(starts) - 1
    found = await _earliest_within(starts, guess, fit_from, target)
    if found is not None:
        return found
    if fits:
        return current
    last = await fit_from(starts[-1]) if starts else current
    if last.tokens <= limit:
        return last  # Only the newest exchange: it fits, if not with a quarter free.
    raise DoesNotFit(last.tokens, limit, window)


async def _earliest_within(
    starts: list[int], guess: int, fit_from: Callable[[int], Awaitable[Fit]], target: int
) -> Fit | None:
    """The fit from the earliest of `starts` that takes at most `target` tokens, or None.

    Counts go down as the start moves on, so the search starts at the estimate's
    `guess` and moves back while the one before also fits, or on until one fits:
    real counts decide, the estimate only saves counting.
    """
    if not starts:
        return None
    fit = await fit_from(starts[guess])
    if fit.tokens <= target:
        while guess > 0 and (earlier := await fit_from(starts[guess - 1])).tokens <= target:
            fit, guess = earlier, guess - 1
        return fit
    for n in starts[guess + 1 :]:
        if (fit := await fit_from(n)).tokens <= target:
            return fit
    return None


def _chars(item: Item) -> int:
    """About how many characters of `item` a request holds."""
    if isinstance(item, UserPrompt):
        return len(item.text)
    if isinstance(item, ToolResult):
        return len(item.content)
    if isinstance(item, ModelResponse) and item.state is ResponseState.COMPLETE:
        calls = sum(len(c.name) + len(c.arguments) for c in item.tool_calls)
        return len(item.text) + calls
    return 0


def learn_window(provider: ProviderLifecycle, overflow: ContextOverflow, chars: int) -> None:
    """After a server said "too long" to a request of `chars` characters: learn its window.

    The window it named, or one just under what was sent. The server's words
    are untrusted: a prompt count no tokenizer would give is ignored, and a
    named window is believed only if it explains the refusal (what was sent,
    by the best count there is, did not fit it). Else the window is taken just
    under what was sent, which the server did refuse.
    """
    counted = overflow.prompt_tokens
    if counted and not plausible(chars / counted):
        counted = None
    if counted:  # The server's own count: the estimates follow it.
        provider.chars_per_token = chars / counted
    sent = provider.reply_room + (counted or math.ceil(chars / provider.chars_per_token))
    named = overflow.window
    if named and named < sent:
        window = named
    else:
        window = max(sent - 1, provider.reply_room + 1)
        if named and not counted:
            provider.chars_per_token *= 0.75  # It seemed to fit: the estimates were low.
    known = provider.context_window
    provider.learned_context_window = min(window, known) if known else window


def calibrate(provider: ProviderLifecycle, chars: int, input_tokens: int) -> None:
    """Learn the provider's characters per token from a request's reported prompt tokens."""
    if input_tokens > 0 and plausible(ratio := chars / input_tokens):
        provider.chars_per_token = ratio


def plausible(chars_per_token: float) -> bool:
    """Whether a tokenizer could give this ratio: figures past these are ignored."""
    return 1.0 <= chars_per_token <= 8.0
