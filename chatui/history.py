"""Build the provider-neutral history sent to a model, repairing interruptions.

The rules (design contract point 7), applied in one deterministic pass:

- A response that did not complete (interrupted or failed) is left out, with
  any tool calls it made. After an interrupted one, the next user message
  starts with a note saying the previous reply was interrupted by the user.
- A completed tool call is always followed by its result. A call whose result
  is missing (its run was stopped) gets a synthesized "cancelled by the user"
  result.
- A tool result whose call is not in the history is left out.
- Consecutive user messages are merged into one, and an assistant message
  with neither text nor tool calls is left out, so both the OpenAI and the
  Anthropic APIs accept the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from chatui.messages import Item, ModelResponse, ResponseState, ToolResult, UserPrompt

DEFAULT_INTERRUPTED_NOTE = "[The user interrupted your previous reply; it is not shown.]"
CANCELLED_TOOL_RESULT = "The tool call was cancelled by the user before it finished."


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of provider-neutral history."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


def build_history(
    items: list[Item],
    *,
    system_prompt: str = "",
    interrupted_note: str = DEFAULT_INTERRUPTED_NOTE,
) -> list[ChatMessage]:
    """Return the repaired history for `items` (oldest first)."""
    results: dict[str, ToolResult] = {}
    for item in items:
        if isinstance(item, ToolResult):
            results.setdefault(item.call_id, item)

    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt))
    note_pending = False
    for item in items:
        if isinstance(item, UserPrompt):
            text = f"{interrupted_note}\n\n{item.text}" if note_pending else item.text
            note_pending = False
            _append_user(messages, text)
        elif isinstance(item, ModelResponse):
            if item.state is not ResponseState.COMPLETE:
                note_pending = note_pending or item.state is not ResponseState.FAILED
                continue
            messages.extend(_response_messages(item, results))
    return messages


def history_bytes(messages: list[ChatMessage]) -> bytes:
    """A canonical serialization, for checking that the repair is deterministic."""
    return json.dumps([asdict(m) for m in messages], sort_keys=True).encode()


def _append_user(messages: list[ChatMessage], text: str) -> None:
    if messages and messages[-1].role == "user":
        messages[-1] = ChatMessage("user", f"{messages[-1].content}\n\n{text}")
    else:
        messages.append(ChatMessage("user", text))


def _response_messages(
    response: ModelResponse, results: dict[str, ToolResult]
) -> list[ChatMessage]:
    calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in response.tool_calls if c.complete)
    text = response.text
    if not text and not calls:
        return []
    out = [ChatMessage("assistant", text, tool_calls=calls)]
    for call in calls:
        result = results.get(call.id)
        content = result.content if result is not None else CANCELLED_TOOL_RESULT
        out.append(ChatMessage("tool", content, tool_call_id=call.id, name=call.name))
    return out
