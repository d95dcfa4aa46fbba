"""Fitting a conversation into the model's context window.

A request holds the system prompt, the history in view, the tools, and must
leave room for the reply (the provider's `reply_room`, its max_tokens), so a
reply is never cut short by a full context. When it would not fit, the view
start moves forward to a later user prompt: whole exchanges are left out, so a
tool call always goes with its result, and never the system prompt or the new
prompt. The move frees at least a quarter of the window at once and the start
then stays put until a request no longer fits: the requests between two trims
share one prefix, which the local KV cache and the providers' prompt caches
reuse. The store keeps everything; only what is sent changes.

The plan is deterministic: the same items, view start and token counts give
the same start. Token counts are the provider's (exact for the local model,
estimated for a remote one), and each candidate start is checked with a real
count before it is taken.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chatui.history import ChatMessage, in_view
from chatui.messages import Item, ModelResponse, ResponseState, ToolResult, UserPrompt

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
    """The history to send from `view_start` on, or from a later prompt if it must move.

    `build(start)` gives the history from a start, `count(messages)` its size
    in tokens. Raises `DoesNotFit` when not even the last exchange fits.
    """
    limit = window - reply_room
    messages = build(view_start)
    tokens = await count(messages)
    if tokens <= limit:
        return Fit(view_start, messages, tokens)
    kept, _ = in_view(list(items), view_start)
    starts = [n for n, item in enumerate(kept) if isinstance(item, UserPrompt) and n > 0]
    target = max(limit - window // TRIM_SHARE, 0)
    # Estimated tokens left out by starting at each candidate, from the items' characters.
    per_char = tokens / max(sum(map(_chars, kept)), 1)
    dropped, left_out = 0.0, []
    for item in kept:
        left_out.append(dropped)
        dropped += _chars(item) * per_char
    first = next((k for k, n in enumerate(starts) if tokens - left_out[n] <= target), None)
    # The first start, from the estimate's on, that frees the quarter (checked by a real
    # count); if none does, the last one: only the newest exchange, if that fits at all.
    for n in starts[first if first is not None else len(starts) - 1 :]:
        start = kept[n].id
        messages = build(start)
        tokens = await count(messages)
        if tokens <= target or (n == starts[-1] and tokens <= limit):
            return Fit(start, messages, tokens)
    raise DoesNotFit(tokens, limit, window)


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
