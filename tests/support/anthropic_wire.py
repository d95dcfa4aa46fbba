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
A `tool_result`'s content is a string or text and image blocks; an image is
base64 of at most 5 MB, of a type the API takes, and its bytes are of that
type. A tool's name fits `^[a-zA-Z0-9_-]{1,64}$`, and its `input_schema` is
an object schema without `oneOf`, `anyOf` or `allOf` at its root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
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


IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
IMAGE_LIMIT = 5 * 1024 * 1024  # Bytes of an image's base64.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def _image_problem(block: dict[str, Any]) -> str | None:
    """Why the API would refuse an image block, or None."""
    source = block.get("source") or {}
    if source.get("type") != "base64":
        return "image.source.type: Input should be 'base64' or 'url'"
    media_type, data = source.get("media_type"), source.get("data")
    if media_type not in IMAGE_TYPES:
        return (
            "image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    if not isinstance(data, str) or len(data) > IMAGE_LIMIT:
        size = len(data) if isinstance(data, str) else 0
        return f"image exceeds 5 MB maximum: {size} bytes > {IMAGE_LIMIT} bytes"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "image.source.base64.data: invalid base64 data"
    found = next((kind for sig, kind in SIGNATURES.items() if raw.startswith(sig)), None)
    if found is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        found = "image/webp"
    if found != media_type:
        return (
            f"image.source.base64.data: Image does not match the provided media type {media_type}"
        )
    return None


def _result_problem(content: Any) -> str | None:
    """Why the API would refuse a `tool_result`'s content, or None."""
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return "tool_result.content: Input should be a valid string or list"
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not str(block.get("text", "")).strip():
                return "text content blocks must contain non-whitespace text"
        elif kind == "image":
            if problem := _image_problem(block):
                return problem
        else:
            return f"tool_result content: Input tag {kind!r} is not one of 'text', 'image'"
    return None


def _tool_problem(n: int, tool: Any) -> str | None:
    """Why the API would refuse the `n`-th tool's definition, or None."""
    if not isinstance(tool, dict) or not TOOL_NAME.fullmatch(str(tool.get("name", ""))):
        return f"tools.{n}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
    schema = tool.get("input_schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return f"tools.{n}.custom.input_schema.type: Input should be 'object'"
    if any(key in schema for key in ("oneOf", "anyOf", "allOf")):
        return (
            f"tools.{n}.custom.input_schema: input_schema does not support oneOf, allOf, or "
            "anyOf at the top level"
        )
    return None


def validate(body: dict[str, Any]) -> dict[str, Any] | None:
    """None if Anthropic would accept `body`'s messages, else its error body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _refuse("messages: at least one message is required")
    if not isinstance(body.get("max_tokens"), int):
        return _refuse("max_tokens: Field required")
    for n, tool in enumerate(body.get("tools") or []):
        if problem := _tool_problem(n, tool):
            return _refuse(problem)
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
            if block.get("type") == "tool_result" and (
                problem := _result_problem(block.get("content"))
            ):
                return _refuse(f"messages.{n}.content: {problem}")
            if block.get("type") == "image" and (problem := _image_problem(block)):
                return _refuse(f"messages.{n}.content: {problem}")
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
