"""The Anthropic provider: Messages streaming on the official `anthropic` SDK.

Text comes in `text` blocks, and tool calls in `tool_use` blocks, whose input
arrives as `input_json_delta` fragments. With `thinking_budget` set, thinking
blocks stream first (`thinking_delta`, then a `signature_delta`), or come
whole and encrypted (`redacted_thinking`); both are kept and, while thinking
is on, sent back unmodified ahead of the reply's text and tool calls, as the
API requires within a tool loop. The input token count comes from
`message_start` and the output count from `message_delta`; a stop before
`message_delta` leaves the output count to the turn's estimate, flagged as
estimated. A stream without `message_stop` did not finish. A call is whole
only if the reply ended normally: the block a `max_tokens` stop cut is kept
incomplete, so it never runs and never goes back to the model.

The SDK makes the request and raises its status errors; the body's events
are read by `chatui.providers.sse` (why: there), as JSON, each field checked.
An `event: error` inside the stream becomes `remote.ErrorEvent`; its error
type (`overloaded_error`, say) decides the text, and gateways that send the
error as a bare string are understood too. Retries, error texts and the
close on a stop: `chatui.providers.remote`.

Continuing a reply (`continue_with`): the Messages API continues a final
assistant message (a prefill), but refuses one that ends in whitespace and
refuses any prefill while extended thinking is on; "auto" prefills, or asks
by instruction while thinking is on (`remote.continued`, and its seam rule).
Claude 4.6 and later models refuse any prefill (a 400): "auto" then asks by
instruction, at once and from then on (`remote.PrefillRefused`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anthropic

from chatui.config import AnthropicConfig
from chatui.history import ChatMessage, Thinking
from chatui.messages import Attachment, FinishReason
from chatui.providers import remote, sse
from chatui.providers.base import (
    ModelRequest,
    ProviderError,
    RedactedThinking,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ThinkingSigned,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    UsageUpdate,
)

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_COUNT = 20  # Images in one request, at most (the API takes 100)...
IMAGE_BUDGET = 24_000_000  # ...and characters of their base64 (a request is 32 MB at most).

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
# Stop reasons after which every stopped tool_use block is whole (None: the server gave none).
# Any other ("max_tokens", "refusal", "model_context_window_exceeded") cut the last block short.
STOPS_ENDING_CALLS = frozenset({"end_turn", "stop_sequence", "tool_use", None})


class AnthropicProvider(remote.RemoteProvider):
    """Streams from the Anthropic Messages API (or a compatible `base_url`)."""

    name = "anthropic"
    label = "Anthropic"

    def __init__(self, config: AnthropicConfig, model: str = "") -> None:
        super().__init__(config.api_key)
        self.config = config
        self.model = model or config.model
        self.base_url = config.base_url
        self.configured_context_window = config.context_window
        self.max_tokens = config.max_tokens

    def unavailable(self) -> str | None:
        if not self.config.api_key:
            return (
                "No Anthropic API key: set the ANTHROPIC_API_KEY environment variable, "
                "or api_key under [anthropic] in the config file."
            )
        return None

    async def _continue(self, request: ModelRequest) -> tuple[list[ChatMessage], remote.Seam]:
        setting = self.config.continue_with
        auto = setting == "auto" and not self.prefill_refused
        prefill = (setting == "prefill" or auto) and not self.config.thinking_budget
        return remote.continued(request.messages, prefill=prefill)

    def _falls_back(self) -> bool:
        return self.config.continue_with == "auto"

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            max_retries=0,  # chatui's own policy: chatui.providers.remote.
            timeout=anthropic.Timeout(None, connect=remote.CONNECT_TIMEOUT),
        )

    def _open(self, client: anthropic.AsyncAnthropic, request: ModelRequest) -> Any:
        return client.messages.create(**self._params(request))

    def _read(self, stream: Any) -> AsyncGenerator[StreamEvent, None]:
        return _read(_events(stream.response.aiter_bytes(), self._not_utf8))

    @property
    def reply_room(self) -> int:
        """As for any server, but more than the thinking budget, which the API requires."""
        room = super().reply_room
        budget = self.config.thinking_budget
        return max(room, budget + 1) if budget else room

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        budget = self.config.thinking_budget
        system, messages = to_anthropic_messages(request.messages, thinking=budget > 0)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.reply_room,
            "messages": messages,
            "stream": True,
        }
        if system:
            params["system"] = system
        if budget:
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if request.tools:
            params["tools"] = to_anthropic_tools(request.tools)
        return params

    def _explain(self, error: BaseException) -> ProviderError:
        if isinstance(error, anthropic.APIStatusError):
            body = error.body
            detail = remote.error_detail(body, error.message)
            hint = "Check ANTHROPIC_API_KEY or api_key under [anthropic] in the config file."
            overloaded = remote.error_kind(body) == "overloaded_error"
            text = remote.status_text(
                self.label,
                error.status_code,
                detail,
                model=self.model,
                key_hint=hint,
                overloaded=overloaded,
            )
        elif isinstance(error, remote.ErrorEvent):
            text = remote.stream_error_text(self.label, error.body)
        else:
            text = remote.transport_text(
                self.label, self.config.base_url, error
            ) or remote.unreadable_text(self.label)
        return ProviderError(text)  # The turn redacts the key (`secrets`).


async def _events(
    body: AsyncIterator[bytes], on_invalid_utf8: Callable[[], None]
) -> AsyncIterator[Any]:
    """The parsed JSON events of a Messages body, up to `message_stop`.

    A `ping`, or an event with blank data, carries nothing; data that is not
    JSON raises (the reply cannot be trusted past it); an `error` event raises
    `remote.ErrorEvent`. An event whose data names no type takes the SSE
    event's name.
    """
    async with aclosing(sse.events(body, on_invalid_utf8)) as events:
        async for event in events:
            if event.name == "ping" or not event.data.strip():
                continue
            data = json.loads(event.data)
            if isinstance(data, dict) and not isinstance(data.get("type"), str):
                data = {**data, "type": event.name}
            kind = data.get("type") if isinstance(data, dict) else None
            if event.name == "error" or kind == "error":
                raise remote.ErrorEvent(data)
            yield data
            if kind == "message_stop":
                break
        else:
            return  # The body ended: nothing to drain.
    await sse.drain(body)


async def _read(events: AsyncIterator[Any]) -> AsyncGenerator[StreamEvent, None]:
    """Translate Messages stream events into stream events.

    Every field is checked, since gateways send null, missing or oddly typed
    ones: what carries nothing usable is skipped (a delta for a block that
    never started, say). Tool calls are assembled by `_ToolBlocks`.
    """
    tools = _ToolBlocks()
    input_tokens = output_tokens = 0
    stop_reason: str | None = None
    finished = False
    async for event in events:
        if not isinstance(event, dict) or finished:
            continue
        kind, index = event.get("type"), remote.integer(event.get("index"))
        if kind == "message_start":
            message = remote.field(event, "message", dict) or {}
            input_tokens = remote.count(remote.field(message, "usage", dict) or {}, "input_tokens")
            yield UsageUpdate(input_tokens, 0)  # The output count comes with message_delta.
        elif kind == "content_block_start":
            block = remote.field(event, "content_block", dict) or {}
            for ended in tools.block_started(index):
                yield ended
            block_type = block.get("type")
            if block_type == "tool_use":
                for started in tools.start(index, block):
                    yield started
            elif block_type == "text" and (text := remote.field(block, "text", str)):
                yield TextDelta(text)
            elif block_type == "thinking" and (thinking := remote.field(block, "thinking", str)):
                yield ThinkingDelta(thinking)
            elif block_type == "redacted_thinking" and (data := remote.field(block, "data", str)):
                yield RedactedThinking(data)
        elif kind == "content_block_delta":
            delta = remote.field(event, "delta", dict) or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta" and (text := remote.field(delta, "text", str)):
                yield TextDelta(text)
            elif delta_type == "input_json_delta":
                for arguments in tools.arguments(index, delta.get("partial_json")):
                    yield arguments
            elif delta_type == "thinking_delta" and (
                thinking := remote.field(delta, "thinking", str)
            ):
                yield ThinkingDelta(thinking)
            elif delta_type == "signature_delta" and (
                signed := remote.field(delta, "signature", str)
            ):
                yield ThinkingSigned(signed)
        elif kind == "content_block_stop":
            for arguments in tools.stopped(index):
                yield arguments
        elif kind == "message_delta":
            delta = remote.field(event, "delta", dict) or {}
            stop_reason = remote.field(delta, "stop_reason", str) or stop_reason
            usage = remote.field(event, "usage", dict) or {}
            output_tokens = remote.count(usage, "output_tokens") or output_tokens
            yield UsageUpdate(input_tokens, output_tokens)
        elif kind == "message_stop":
            finished = True
            for ended in tools.end(cut=stop_reason not in STOPS_ENDING_CALLS):
                yield ended
    if not finished:
        raise ProviderError("The stream ended before the reply did (no message_stop).")
    yield StreamEnd(STOP_REASONS.get(stop_reason or "", "stop"))


class _ToolBlocks:
    """The `tool_use` blocks of one reply, and when each call is whole.

    A block's `content_block_stop` does not make its call whole: a reply cut
    by `max_tokens` stops its last block too. So a stopped block's
    `ToolCallEnd` waits until another block starts (it surely ended then) or
    the message ends with a stop reason that lets it be whole; the last block
    of a reply cut short stays incomplete, never runs and never goes back.
    Some gateways give the whole input in the block's start and stream none;
    `partial_json` sent as an object is taken as its JSON.
    """

    def __init__(self) -> None:
        self._open: dict[int, str] = {}  # Started, not stopped: the input its start gave.
        self._streamed: set[int] = set()  # Blocks whose input came in deltas.
        self._seen: set[int] = set()  # Every tool block started: a second start is ignored.
        self._waiting: list[int] = []  # Stopped; their end waits to be known whole.
        self._last: int | None = None  # The last block of any kind that started.

    def block_started(self, index: int | None) -> list[StreamEvent]:
        """A block began: the tool blocks stopped before it are whole."""
        if index is not None:
            self._last = index
        ended, self._waiting = self._waiting, []
        return [ToolCallEnd(i) for i in ended]

    def start(self, index: int | None, block: dict[str, Any]) -> list[StreamEvent]:
        if index is None or index in self._seen:
            return []
        self._seen.add(index)
        given = remote.field(block, "input", dict)
        self._open[index] = json.dumps(given, ensure_ascii=False) if given else ""
        call_id = remote.field(block, "id", str) or f"call_{index}"
        return [ToolCallStart(index, call_id, remote.field(block, "name", str) or "")]

    def arguments(self, index: int | None, partial: Any) -> list[StreamEvent]:
        if index not in self._open or not (text := remote.json_text(partial)):
            return []  # A block that never started, or stopped, or an empty fragment.
        self._streamed.add(index)
        return [ToolCallDelta(index, text)]

    def stopped(self, index: int | None) -> list[StreamEvent]:
        if index not in self._open:
            return []
        given = self._open.pop(index)
        self._waiting.append(index)
        return [ToolCallDelta(index, given)] if given and index not in self._streamed else []

    def end(self, *, cut: bool) -> list[StreamEvent]:
        """The message ended: the stopped blocks are whole, but the last one of a `cut` reply."""
        ended, self._waiting = self._waiting, []
        return [ToolCallEnd(i) for i in ended if not (cut and i == self._last)]


def to_anthropic_messages(
    messages: list[ChatMessage], *, thinking: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt, and the history as Messages API messages.

    Consecutive tool results go into one user message, followed by the next
    prompt's text in the same message, so roles alternate as the API requires.
    With `thinking`, an assistant message starts with its thinking blocks as
    received (the history holds only signed or redacted ones).
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    out: list[dict[str, Any]] = []
    images = _images_sent(messages)

    def user_blocks() -> list[dict[str, Any]]:
        if not out or out[-1]["role"] != "user":
            out.append({"role": "user", "content": []})
        blocks: list[dict[str, Any]] = out[-1]["content"]
        return blocks

    for n, message in enumerate(messages):
        if message.role == "user":
            user_blocks().append({"type": "text", "text": message.content})
        elif message.role == "tool":
            user_blocks().append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": _result_content(message, images.get(n, [])),
                }
            )
        elif message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if thinking:
                blocks += [_thinking_block(t) for t in message.thinking]
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                for c in message.tool_calls
            ]
            if blocks:
                out.append({"role": "assistant", "content": blocks})
    return system, out


def _images_sent(messages: list[ChatMessage]) -> dict[int, list[Attachment]]:
    """The images each tool message sends (by index): the newest that fit the budget."""
    sent: dict[int, list[Attachment]] = {}
    count = size = 0
    for n in range(len(messages) - 1, -1, -1):
        for attachment in reversed(messages[n].attachments):
            if not attachment.data or attachment.mime_type not in IMAGE_TYPES:
                continue
            if count == IMAGE_COUNT or size + len(attachment.data) > IMAGE_BUDGET:
                return sent
            count, size = count + 1, size + len(attachment.data)
            sent.setdefault(n, []).insert(0, attachment)
    return sent


def _result_content(message: ChatMessage, images: list[Attachment]) -> str | list[dict[str, Any]]:
    """A tool result's content: its text alone, or its text's block (if any) and its images."""
    if not images:
        return message.content
    blocks: list[dict[str, Any]] = []
    if message.content.strip():  # The API refuses a blank text block.
        blocks.append({"type": "text", "text": message.content})
    for image in images:
        source = {"type": "base64", "media_type": image.mime_type, "data": image.data}
        blocks.append({"type": "image", "source": source})
    return blocks


def _thinking_block(block: Thinking) -> dict[str, Any]:
    if block.data:
        return {"type": "redacted_thinking", "data": block.data}
    return {"type": "thinking", "thinking": block.text, "signature": block.signature}


def _input(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_anthropic_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": tool.name,
            "description": tool.description,
            "input_schema": tool.parameters or {"type": "object", "properties": {}},
        }
        for tool in tools
    ]
