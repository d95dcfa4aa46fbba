"""Messages API stream events for `wire.WireServer`, and the checks the real API makes.

Every event is sent with its `event:` line (the SDK skips events without
one). `validate` refuses a request the way Anthropic does: roles alternate,
starting with the user; each `tool_use` must be answered by a `tool_result`
in the very next message, and a `tool_result` must answer a `tool_use` of the
message just before it. A thinking block must come back with the signature
this server gave it (`sign`), and with thinking on, an assistant message
whose tool calls the last message answers must start with a thinking block.
A final assistant message is a prefill, which the model continues: its text
must not end in whitespace, and with thinking on it must start with a thinking
block too, so a prefill of text alone is refused then. `validate_without_prefill`
is a model that takes no prefill at all, as Claude 4.6 and later models are.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tests.support.wire import Send, Step


def sign(thinking: str) -> str:
    """The signature this server gives a thinking block, and checks when it comes back."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def event(data: dict[str, Any]) -> Send:
    return Send(data, event=data["type"])


def start(input_tokens: int = 10) -> list[Step]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "wire-model",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return [event({"type": "message_start", "message": message}), event({"type": "ping"})]


def _block(index: int, block: dict[str, Any], deltas: list[dict[str, Any]], stop: bool) -> list:
    """A content block: its start, its deltas, and (if it ends) its stop."""
    steps: list[Step] = [
        event({"type": "content_block_start", "index": index, "content_block": block})
    ]
    steps += [event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    if stop:
        steps.append(event({"type": "content_block_stop", "index": index}))
    return steps


def text_block(index: int, *pieces: str, stop: bool = True) -> list[Step]:
    deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    return _block(index, {"type": "text", "text": ""}, deltas, stop)


def tool_block(index: int, call_id: str, name: str, *fragments: str, stop: bool = True) -> list:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": part} for part in fragments]
    return _block(index, block, deltas, stop)


def json_delta(index: int, partial_json: Any) -> Send:
    """An `input_json_delta` for block `index`, whether or not that block started."""
    delta = {"type": "input_json_delta", "partial_json": partial_json}
    return event({"type": "content_block_delta", "index": index, "delta": delta})


def thinking_block(index: int, *pieces: str, stop: bool = True) -> list[Step]:
    """A thinking block: its text in pieces, then (if it ends) the signature of the whole."""
    deltas = [{"type": "thinking_delta", "thinking": piece} for piece in pieces]
    if stop:
        deltas.append({"type": "signature_delta", "signature": sign("".join(pieces))})
    return _block(index, {"type": "thinking", "thinking": "", "signature": ""}, deltas, stop)


def redacted_block(index: int, data: str) -> list[Step]:
    return _block(index, {"type": "redacted_thinking", "data": data}, [], True)


def ending(stop_reason: str = "end_turn", output_tokens: int = 5) -> list[Step]:
    return [
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            }
        ),
        event({"type": "message_stop"}),
    ]


def reply(*pieces: str, input_tokens: int = 10, output_tokens: int = 5) -> list[Step]:
    return [*start(input_tokens), *text_block(0, *pieces), *ending("end_turn", output_tokens)]


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _refuse(message: str) -> dict[str, Any]:
    return error_body("invalid_request_error", message)


def _blocks(content: Any) -> list[dict[str, Any]]:
    """A message's content as blocks (a string is one text block)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def validate(body: dict[str, Any]) -> dict[str, Any] | None:
    """None if Anthropic would accept `body`'s messages, else its error body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _refuse("messages: at least one message is required")
    if not isinstance(body.get("max_tokens"), int):
        return _refuse("max_tokens: Field required")
    owed: set[str] = set()  # tool_use ids the next message must answer.
    for n, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role != ("user" if n % 2 == 0 else "assistant"):
            return _refuse(f"messages.{n}: roles must alternate, starting with 'user'")
        blocks = _blocks(content)
        if not blocks:
            return _refuse(f"messages.{n}: all messages must have non-empty content")
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if owed - answered:
            return _refuse(
                f"messages.{n}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(owed - answered))}"
            )
        if answered - owed:
            return _refuse(
                f"messages.{n}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(sorted(str(i) for i in answered - owed))}. Each "
                "`tool_result` block must have a corresponding `tool_use` block in the "
                "previous message."
            )
        for block in blocks:
            if block.get("type") == "text" and not block.get("text", "").strip():
                return _refuse(
                    f"messages.{n}: text content blocks must contain non-whitespace text"
                )
            if block.get("type") == "tool_use" and not isinstance(block.get("input"), dict):
                return _refuse(f"messages.{n}: tool_use.input must be an object")
            if block.get("type") == "thinking" and block.get("signature") != sign(
                block.get("thinking", "")
            ):
                return _refuse(f"messages.{n}: Invalid `signature` in `thinking` block")
            if block.get("type") == "redacted_thinking" and not block.get("data"):
                return _refuse(f"messages.{n}: redacted_thinking.data: Field required")
        owed = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    last, thinking = messages[-1], (body.get("thinking") or {}).get("type") == "enabled"
    answers = isinstance(last["content"], list) and any(
        b.get("type") == "tool_result" for b in last["content"]
    )
    prefill = last["role"] == "assistant"
    if prefill:
        final = _blocks(last["content"])[-1]
        if final.get("type") == "text" and final.get("text", "") != final.get("text", "").rstrip():
            return _refuse("messages: final assistant content cannot end with trailing whitespace")
    if thinking and (answers or prefill) and len(messages) > 1:
        at = len(messages) - (1 if prefill else 2)
        first = _blocks(messages[at]["content"])[0].get("type")
        if first not in ("thinking", "redacted_thinking"):
            return _refuse(
                f"messages.{at}.content.0.type: Expected `thinking` or "
                f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block."
            )
    if owed:
        return _refuse(f"the last message has `tool_use` without results: {sorted(owed)}")
    return None


PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)


def validate_without_prefill(body: dict[str, Any]) -> dict[str, Any] | None:
    """As `validate`, for a model that refuses any prefill (Claude 4.6 and later)."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
        return _refuse(PREFILL_REFUSED)
    return validate(body)
