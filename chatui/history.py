"""Build the provider-neutral history sent to a model, repairing interruptions.

The rules (rule 7 of the cancellation contract, docs/cancellation.md), applied
in one deterministic pass:

- A response that did not complete (interrupted or failed) is left out, with
  any tool calls it made. After an interrupted one, the next user message
  starts with a note saying the previous reply was interrupted by the user.
  With `interrupted_reply="keep"`, an interrupted response's text is sent
  instead, as the assistant's, followed by `KEPT_REPLY_NOTE` so the model
  knows the user cut it there; its tool calls never are (a cut-off call is
  not whole, and a whole one never ran). One with no text is left out, as
  with "drop".
- Continuing a response (`continuing`): the history of the items before it,
  then its text alone (no thinking, no tool calls) as the final assistant
  message, for the model to go on from.
- A completed tool call is always followed by its result. A call whose result
  is missing (its run was stopped) gets a synthesized "cancelled by the user"
  result.
- A tool result's attachments (an image) go with its message; its text
  already summarises them, for the providers that send text only.
- A call whose arguments nest too deeply to be parsed safely (it was never
  run) goes with no arguments (`{}`): every provider parses them again.
- A tool result whose call is not in the history is left out. Each result is
  paired with the nearest earlier call of its id that has no result yet, so an
  id used again later (by another request) never takes an older call's result.
- Tool-call ids are unique in the history: a repeated id gets a suffix (`_2`,
  `_3`, ...), on the call and on its result, and characters that the Anthropic
  API refuses (outside `[a-zA-Z0-9_-]`) become `_`.
- Reasoning goes back only as the provider signed it (an Anthropic thinking
  block with its signature, or a redacted one), unmodified; unsigned
  reasoning (an OpenAI-compatible server's) was only for the user to read.
- Once a conversation outgrew the model's context window, the history starts
  at its view start (`view_start`, always a user prompt): earlier items are
  left out, and the first message says so (`TRIMMED_NOTE`).
- Consecutive user messages are merged into one, and an assistant message
  with neither text (but whitespace) nor tool calls is left out, so both the OpenAI and the
  Anthropic APIs accept the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Literal

from chatui.config import DEFAULT_INTERRUPTED_NOTE
from chatui.messages import (
    Attachment,
    Item,
    ModelResponse,
    ResponseState,
    ToolResult,
    UserPrompt,
    nests_too_deep,
)

TRIMMED_NOTE = (
    "[Earlier messages of this conversation were left out to fit your context window; "
    "the conversation continues from here.]"
)
KEPT_REPLY_NOTE = "[The user interrupted this reply here.]"
CANCELLED_TOOL_RESULT = "The tool call was cancelled by the user before it finished."
_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")

CallRef = tuple[int, int]  # (index of the response in the items, index of the call in it)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Thinking:
    """A signed thinking block (`signature`), or a redacted one (`data`), as received."""

    text: str = ""
    signature: str = ""
    data: str = ""


@dataclass(frozen=True)
class ChatMessage:
    """One message of provider-neutral history."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: tuple[Thinking, ...] = ()  # An assistant's, before its text and calls.
    tool_call_id: str | None = None
    name: str | None = None
    # A tool result's binary content (an image): `content` already summarises it, and the
    # providers whose API takes it in a tool result (Anthropic) send it too.
    attachments: tuple[Attachment, ...] = ()


def build_history(
    items: list[Item],
    *,
    system_prompt: str = "",
    interrupted_note: str = DEFAULT_INTERRUPTED_NOTE,
    view_start: str | None = None,
    interrupted_reply: str = "drop",
    continuing: ModelResponse | None = None,
) -> list[ChatMessage]:
    """Return the repaired history for `items` (oldest first), from `view_start` on.

    `interrupted_reply` is "drop" or "keep" (the config's key, see above). With
    `continuing` (a response in `items`, the reply cut short), the history ends
    with that reply's text as the assistant's, for the model to go on from.
    """
    items, trimmed = in_view(items, view_start)
    if continuing is not None:
        at = next((n for n, item in enumerate(items) if item.id == continuing.id), None)
        if at is None:
            raise ValueError("the response to continue is not in the history's view")
        items = items[:at]
    results = pair_results(items)
    used_ids: set[str] = set()
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt))
    note_pending = False
    if trimmed:
        _append_user(messages, TRIMMED_NOTE)  # Merged into the first prompt kept.
    for n, item in enumerate(items):
        if isinstance(item, UserPrompt):
            text = f"{interrupted_note}\n\n{item.text}" if note_pending else item.text
            note_pending = False
            _append_user(messages, text)
        elif isinstance(item, ModelResponse):
            if item.state is ResponseState.COMPLETE:
                messages.extend(_response_messages(n, item, results, used_ids))
            elif item.state is ResponseState.FAILED:
                continue
            elif interrupted_reply == "keep" and item.text.strip():
                kept = f"{item.text.rstrip()}\n\n{KEPT_REPLY_NOTE}"
                messages.append(ChatMessage("assistant", kept))
                note_pending = False  # The note in the reply itself says it.
            else:
                note_pending = True
    if continuing is not None:
        messages.append(ChatMessage("assistant", continuing.text))
    return messages


def in_view(items: list[Item], view_start: str | None) -> tuple[list[Item], bool]:
    """The items from `view_start` on, and whether any were left out before it.

    An unknown `view_start` (its item is gone) leaves nothing out.
    """
    if view_start is None:
        return items, False
    start = next((n for n, item in enumerate(items) if item.id == view_start), 0)
    return items[start:], start > 0


def history_bytes(messages: list[ChatMessage]) -> bytes:
    """A canonical serialization, for checking that the repair is deterministic."""
    return json.dumps([asdict(m) for m in messages], sort_keys=True).encode()


def _append_user(messages: list[ChatMessage], text: str) -> None:
    if messages and messages[-1].role == "user":
        messages[-1] = ChatMessage("user", f"{messages[-1].content}\n\n{text}")
    else:
        messages.append(ChatMessage("user", text))


def pair_results(items: list[Item]) -> dict[CallRef, ToolResult]:
    """Pair each result with the nearest earlier call of its id that has no result yet.

    The calls of every response count, also of one left out of the history, so
    a result is never given to an older call of the same id. Within one
    response, calls sharing an id are answered in order. The screen shows
    results by this pairing too, so that a call shows the result the model got
    for it (conversations stored by older versions repeat ids).
    """
    waiting: dict[str, list[CallRef]] = {}
    paired: dict[CallRef, ToolResult] = {}
    for n, item in enumerate(items):
        if isinstance(item, ModelResponse):
            for k, call in enumerate(item.tool_calls):
                waiting.setdefault(call.id, []).append((n, k))
        elif isinstance(item, ToolResult) and (refs := waiting.get(item.call_id)):
            ref = next(r for r in refs if r[0] == refs[-1][0])  # First of the latest response.
            refs.remove(ref)
            paired[ref] = item
    return paired


def unique_id(call_id: str, used: set[str]) -> str:
    """`call_id` made API-safe and unique among `used` (which it joins)."""
    base = _UNSAFE_ID.sub("_", call_id) or "call"
    unique, n = base, 1
    while unique in used:
        n += 1
        unique = f"{base}_{n}"
    used.add(unique)
    return unique


def _response_messages(
    n: int, response: ModelResponse, results: dict[CallRef, ToolResult], used_ids: set[str]
) -> list[ChatMessage]:
    calls = [(k, c) for k, c in enumerate(response.tool_calls) if c.complete]
    text = response.text if response.text.strip() else ""  # Anthropic refuses blank text.
    if not text and not calls:
        return []
    named = [(unique_id(c.id, used_ids), k, c) for k, c in calls]
    tool_calls = tuple(
        ToolCall(call_id, c.name, "{}" if nests_too_deep(c.arguments) else c.arguments)
        for call_id, _, c in named
    )
    thinking = tuple(
        Thinking(t.text, t.signature, t.data) for t in response.thinking if t.signature or t.data
    )
    out = [ChatMessage("assistant", text, tool_calls=tool_calls, thinking=thinking)]
    for call_id, k, call in named:
        result = results.get((n, k))
        content = result.content if result is not None else CANCELLED_TOOL_RESULT
        attachments = tuple(result.attachments) if result is not None else ()
        out.append(
            ChatMessage(
                "tool", content, tool_call_id=call_id, name=call.name, attachments=attachments
            )
        )
    return out
