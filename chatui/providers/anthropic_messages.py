"""The Anthropic provider: Messages streaming on the official `anthropic` SDK.

Text comes in `text` blocks, and tool calls in `tool_use` blocks, whose input
arrives as `input_json_delta` fragments. With `thinking_budget` set, thinking
blocks stream first (`thinking_delta`, then a `signature_delta`), or come
whole and encrypted (`redacted_thinking`); both are kept and, while thinking
is on, sent back unmodified ahead of the reply's text and tool calls, as the
API requires within a tool loop. The input token count comes from
`message_start` and the output count from `message_delta`; a stop before
`message_delta` leaves the output count to the turn's estimate, flagged as
estimated. A stream without `message_stop` did not finish. An `event: error`
inside the stream is raised by the SDK with status 200; its error type
(`overloaded_error`, say) decides the text. Retries, error texts and the close
on a stop: `chatui.providers.remote`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from chatui.config import AnthropicConfig
from chatui.history import ChatMessage, Thinking
from chatui.messages import FinishReason
from chatui.providers import remote
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

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class AnthropicProvider(remote.RemoteProvider):
    """Streams from the Anthropic Messages API (or a compatible `base_url`)."""

    name = "anthropic"
    label = "Anthropic"

    def __init__(self, config: AnthropicConfig, model: str = "") -> None:
        super().__init__(config.api_key)
        self.config = config
        self.model = model or config.model
        self.base_url = config.base_url

    def unavailable(self) -> str | None:
        if not self.config.api_key:
            return (
                "No Anthropic API key: set the ANTHROPIC_API_KEY environment variable, "
                "or api_key under [anthropic] in the config file."
            )
        return None

    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            max_retries=0,  # chatui's own policy: chatui.providers.remote.
            timeout=anthropic.Timeout(None, connect=remote.CONNECT_TIMEOUT),
        )

    def _open(self, client: anthropic.AsyncAnthropic, request: ModelRequest) -> Any:
        return client.messages.create(**self._params(request))

    def _read(self, stream: Any) -> AsyncIterator[StreamEvent]:
        return _read(stream)

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        budget = self.config.thinking_budget
        system, messages = to_anthropic_messages(request.messages, thinking=budget > 0)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.config.max_tokens,
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
            kind = body.get("error", {}).get("type") if isinstance(body, dict) else None
            detail = remote.error_detail(body, error.message)
            hint = "Check ANTHROPIC_API_KEY or api_key under [anthropic] in the config file."
            overloaded = kind == "overloaded_error"
            status = error.status_code
            if status == 200:  # An `event: error` inside the stream.
                status = 529 if overloaded else 500
                detail = f"{detail} (in the middle of the reply)"
            text = remote.status_text(
                self.label, status, detail, model=self.model, key_hint=hint, overloaded=overloaded
            )
        else:
            text = remote.transport_text(self.label, self.config.base_url, error) or (
                f"{self.label} failed: {type(error).__name__}: {error}"
            )
        return ProviderError(text)  # The turn redacts the key (`secrets`).


async def _read(raw: Any) -> AsyncIterator[StreamEvent]:
    """Translate Messages stream events into stream events."""
    tool_blocks: set[int] = set()
    input_tokens = output_tokens = 0
    stop_reason: str | None = None
    finished = False
    async for event in raw:
        kind = event.type
        if kind == "message_start":
            input_tokens = event.message.usage.input_tokens or 0
            yield UsageUpdate(input_tokens, 0)  # The output count comes with message_delta.
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tool_blocks.add(event.index)
                yield ToolCallStart(event.index, block.id, block.name)
            elif block.type == "text" and block.text:
                yield TextDelta(block.text)
            elif block.type == "thinking" and block.thinking:
                yield ThinkingDelta(block.thinking)
            elif block.type == "redacted_thinking":
                yield RedactedThinking(block.data)
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                yield TextDelta(delta.text)
            elif delta.type == "input_json_delta" and delta.partial_json:
                yield ToolCallDelta(event.index, delta.partial_json)
            elif delta.type == "thinking_delta" and delta.thinking:
                yield ThinkingDelta(delta.thinking)
            elif delta.type == "signature_delta":
                yield ThinkingSigned(delta.signature)
        elif kind == "content_block_stop":
            if event.index in tool_blocks:
                yield ToolCallEnd(event.index)
        elif kind == "message_delta":
            stop_reason = event.delta.stop_reason or stop_reason
            output_tokens = event.usage.output_tokens or output_tokens
            yield UsageUpdate(input_tokens, output_tokens)
        elif kind == "message_stop":
            finished = True
            break
    if not finished:
        raise ProviderError("The stream ended before the reply did (no message_stop).")
    yield StreamEnd(STOP_REASONS.get(stop_reason or "", "stop"))


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

    def user_blocks() -> list[dict[str, Any]]:
        if out and out[-1]["role"] == "user":
            return out[-1]["content"]
        out.append({"role": "user", "content": []})
        return out[-1]["content"]

    for message in messages:
        if message.role == "user":
            user_blocks().append({"type": "text", "text": message.content})
        elif message.role == "tool":
            user_blocks().append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
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
