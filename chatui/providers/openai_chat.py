"""The OpenAI provider: Chat Completions streaming on the official `openai` SDK.

With `base_url` it drives any OpenAI-compatible server (llama.cpp server, vLLM,
Ollama, LM Studio); such a server needs no key, so a placeholder is sent. Usage
comes in the stream's last chunk (`stream_options.include_usage`), whose
`choices` is empty. A tool call's id and name come in its first delta, its
arguments in fragments keyed by `index`. Reasoning that compatible servers
stream (`reasoning_content` or `reasoning`, kept by the SDK in the delta's
extra fields) is never merged into the answer. Retries, error texts and the
close on a stop: `chatui.providers.remote`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai

from chatui.config import OpenAIConfig
from chatui.history import ChatMessage
from chatui.messages import FinishReason
from chatui.providers import remote
from chatui.providers.base import (
    ModelRequest,
    ProviderError,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
    UsageUpdate,
)

REASONING_FIELDS = ("reasoning_content", "reasoning")  # llama.cpp/vLLM/DeepSeek, Ollama/vLLM.
PLACEHOLDER_KEY = "no-key"  # A compatible server without keys; the SDK insists on one.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


class OpenAIProvider(remote.RemoteProvider):
    """Streams from OpenAI, or from the OpenAI-compatible server at `config.base_url`."""

    name = "openai"

    def __init__(self, config: OpenAIConfig, model: str = "") -> None:
        super().__init__(config.api_key)
        self.config = config
        self.model = model or config.model
        self.base_url = config.base_url
        self.label = "OpenAI" if not config.base_url else "the OpenAI-compatible server"

    def unavailable(self) -> str | None:
        if not self.config.api_key and not self.config.base_url:
            return (
                "No OpenAI API key: set the OPENAI_API_KEY environment variable, or "
                "api_key under [openai] in the config file. For an OpenAI-compatible "
                "server (Ollama, vLLM, llama.cpp server, LM Studio), set base_url instead."
            )
        return None

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.config.api_key or PLACEHOLDER_KEY,
            base_url=self.config.base_url or None,
            max_retries=0,  # chatui's own policy: chatui.providers.remote.
            timeout=openai.Timeout(None, connect=remote.CONNECT_TIMEOUT),
        )

    def _open(self, client: openai.AsyncOpenAI, request: ModelRequest) -> Any:
        return client.chat.completions.create(**self._params(request))

    def _read(self, stream: Any) -> AsyncIterator[StreamEvent]:
        return _read(stream)

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.config.temperature,
        }
        # OpenAI's own API wants max_completion_tokens; compatible servers know max_tokens.
        limit = "max_tokens" if self.config.base_url else "max_completion_tokens"
        params[limit] = self.config.max_tokens
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
        return params

    def _explain(self, error: BaseException) -> ProviderError:
        if isinstance(error, openai.APIStatusError):
            detail = remote.error_detail(error.body, error.message)
            hint = "Check OPENAI_API_KEY or api_key under [openai] in the config file."
            text = remote.status_text(
                self.label, error.status_code, detail, model=self.model, key_hint=hint
            )
        else:
            text = remote.transport_text(self.label, self.config.base_url, error) or (
                f"{self.label} failed: {type(error).__name__}: {error}"
            )
        return ProviderError(text)  # The turn redacts the key (`secrets`).


async def _read(chunks: Any) -> AsyncIterator[StreamEvent]:
    """Translate Chat Completions chunks into stream events."""
    started: set[int] = set()
    finish: str | None = None
    usage = None
    async for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                if reasoning := _reasoning(delta):
                    yield ThinkingDelta(reasoning)
                if delta.content:
                    yield TextDelta(delta.content)
                for call in delta.tool_calls or ():
                    function = call.function
                    if call.index not in started:
                        started.add(call.index)
                        name = (function.name if function else None) or ""
                        yield ToolCallStart(call.index, call.id or f"call_{call.index}", name)
                    if function is not None and function.arguments:
                        yield ToolCallDelta(call.index, function.arguments)
            if choice.finish_reason and finish is None:
                finish = choice.finish_reason
                for index in sorted(started):  # Arguments are whole once the choice ends.
                    yield ToolCallEnd(index)
    if finish is None:
        raise ProviderError("The stream ended before the reply did (no finish reason).")
    if usage is not None:
        yield UsageUpdate(usage.prompt_tokens or 0, usage.completion_tokens or 0)
    yield StreamEnd(FINISH_REASONS.get(finish, "stop"))


def _reasoning(delta: Any) -> str:
    """Reasoning text a compatible server put in the delta's extra fields, if any."""
    extra = delta.model_extra or {}
    for name in REASONING_FIELDS:
        value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def to_openai_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The provider-neutral history as Chat Completions messages: one `tool` message per call."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": _arguments(call.arguments)},
                    }
                    for call in message.tool_calls
                ]
            out.append(entry)
        elif message.role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def _arguments(raw: str) -> str:
    """Arguments as sent: the model's own text when it is JSON, else an empty object."""
    try:
        json.loads(raw or "{}")
    except ValueError:
        return "{}"
    return raw or "{}"


def to_openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]
