"""The OpenAI provider: Chat Completions streaming on the official `openai` SDK.

With `base_url` it drives any OpenAI-compatible server (llama.cpp server, vLLM,
Ollama, LM Studio); such a server needs no key, so a placeholder is sent. Usage
comes in the stream's last chunk (`stream_options.include_usage`), whose
`choices` is empty. A tool call's id and name come in its first delta, its
arguments in fragments keyed by `index` (compatible servers differ: see
`_Calls`). A call is whole only if the reply ended normally: one cut by the
token limit is kept incomplete, so it never runs and never goes back to the
model. Reasoning that compatible servers stream (`reasoning_content` or
`reasoning`) is never merged into the answer.

Continuing a reply (`continue_with`, "auto" by default): OpenAI itself answers
a final assistant message with a new turn, so it is asked by instruction
(`remote.continued`). vLLM continues a final assistant message when told to
(`continue_final_message`, without `add_generation_prompt`). llama.cpp's server
continues one by itself (it renders the messages before it, then appends its
text as is), but refuses to while a thinking model's `enable_thinking` is on,
so the request turns it off. Which server it is comes from what it reports
of the model (`served_window`); any other server is asked by instruction. That
includes llama-cpp-python's `llama_cpp.server`: with a GGUF's chat template (0.3.x) it
always adds the generation prompt, so it closes a final assistant message with
the end-of-turn and opens a new one after it (tests/test_llama_server.py shows
the prompt it renders), and it ignores vLLM's fields. A server that refuses
the prefill (a gateway that does not know vLLM's fields, say) is asked by
instruction at once, and from then on (`remote.PrefillRefused`).

The SDK makes the request and raises its status errors; the body's events
are read by `chatui.providers.sse` (why: there), as JSON, each field checked.
Retries, error texts and the close on a stop: `chatui.providers.remote`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import openai

from chatui.config import OpenAIConfig
from chatui.history import ChatMessage
from chatui.messages import FinishReason
from chatui.providers import remote, sse
from chatui.providers.base import (
    ModelRequest,
    Progress,
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
from chatui.providers.served_window import Served, ServerKind, served

REASONING_FIELDS = ("reasoning_content", "reasoning")  # llama.cpp/vLLM/DeepSeek, Ollama/vLLM.
PLACEHOLDER_KEY = "no-key"  # A compatible server without keys; the SDK insists on one.
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
# Finish reasons after which every call's arguments are whole. Some compatible servers end a
# reply of calls with "stop". Any other ("length", "content_filter") cut the last call short.
CALLS_ENDED = frozenset({"tool_calls", "function_call", "stop"})
PREFILL_FIELDS: dict[ServerKind, dict[str, Any]] = {
    "vllm": {"continue_final_message": True, "add_generation_prompt": False},
    "llama.cpp": {"chat_template_kwargs": {"enable_thinking": False}},
}
"""What a request that prefills adds, per server that continues a final assistant message."""


def continue_way(setting: str, kind: ServerKind) -> Literal["prefill", "instruction"]:
    """How a reply is continued on a server of `kind`: as `setting` says, unless "auto"."""
    if setting == "auto":
        return "prefill" if kind in PREFILL_FIELDS else "instruction"
    return "prefill" if setting == "prefill" else "instruction"


def is_openai(base_url: str) -> bool:
    """Whether `base_url` is OpenAI's own API (no base_url at all is)."""
    return not base_url or urlsplit(base_url).hostname == "api.openai.com"


class OpenAIProvider(remote.RemoteProvider):
    """Streams from OpenAI, or from the OpenAI-compatible server at `config.base_url`."""

    name = "openai"

    def __init__(self, config: OpenAIConfig, model: str = "") -> None:
        super().__init__(config.api_key)
        self.config = config
        self.model = model or config.model
        self.base_url = config.base_url
        self.configured_context_window = config.context_window
        self._served: Served | None = None  # What the server said of itself, once asked.
        self.max_tokens = config.max_tokens
        self.label = "OpenAI" if not config.base_url else "the OpenAI-compatible server"

    def unavailable(self) -> str | None:
        if not self.config.api_key and not self.config.base_url:
            return (
                "No OpenAI API key: set the OPENAI_API_KEY environment variable, or "
                "api_key under [openai] in the config file. For an OpenAI-compatible "
                "server (Ollama, vLLM, llama.cpp server, LM Studio), set base_url instead."
            )
        return None

    async def prepare(self, progress: Progress = lambda _detail: None) -> None:
        """Ask a compatible server for its model's context window, unless the config says it."""
        if self.base_url and not self.configured_context_window:
            await self._server()

    async def _server(self) -> Served:
        """What the compatible server says of itself, asked once (OpenAI itself: nothing).

        Kept only once the question is over: a stop in the middle of it (Esc)
        leaves nothing learnt, and the next request asks again.
        """
        if self._served is None:
            if is_openai(self.base_url):
                self._served = Served()
                return self._served
            if self._client is None:
                self._client = self._make_client()
            client = self._client

            async def get(url: str) -> Any:
                return await client.get(url, cast_to=object)

            answer = await served(get, self.base_url, self.model)
            self._served, self.server_context_window = answer, answer.window
        return self._served

    async def _continue(self, request: ModelRequest) -> tuple[list[ChatMessage], remote.Seam]:
        setting = self.config.continue_with
        asks = setting == "instruction" or (setting == "auto" and self.prefill_refused)
        kind = "unknown" if asks else (await self._server()).kind
        prefill = continue_way(setting, kind) == "prefill"
        return remote.continued(request.messages, prefill=prefill)

    def _falls_back(self) -> bool:
        return self.config.continue_with == "auto"

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.config.api_key or PLACEHOLDER_KEY,
            base_url=self.config.base_url or None,
            max_retries=0,  # chatui's own policy: chatui.providers.remote.
            timeout=openai.Timeout(None, connect=remote.CONNECT_TIMEOUT),
        )

    def _open(self, client: openai.AsyncOpenAI, request: ModelRequest) -> Any:
        return client.chat.completions.create(**self._params(request))

    def _read(self, stream: Any) -> AsyncGenerator[StreamEvent, None]:
        return _read(_chunks(stream.response.aiter_bytes(), self._not_utf8))

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
        params[limit] = self.reply_room
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
        prefill = request.continuing and request.messages[-1].role == "assistant"
        if prefill and self._served is not None and self._served.kind in PREFILL_FIELDS:
            params["extra_body"] = PREFILL_FIELDS[self._served.kind]
        return params

    def _explain(self, error: BaseException) -> ProviderError:
        if isinstance(error, openai.APIStatusError):
            detail = remote.error_detail(error.body, error.message)
            hint = "Check OPENAI_API_KEY or api_key under [openai] in the config file."
            text = remote.status_text(
                self.label, error.status_code, detail, model=self.model, key_hint=hint
            )
        elif isinstance(error, remote.ErrorEvent):
            text = remote.stream_error_text(self.label, error.body)
        else:
            text = remote.transport_text(
                self.label, self.config.base_url, error
            ) or remote.unreadable_text(self.label)
        return ProviderError(text)  # The turn redacts the key (`secrets`).


async def _chunks(
    body: AsyncIterator[bytes], on_invalid_utf8: Callable[[], None]
) -> AsyncIterator[Any]:
    """The parsed JSON chunks of a Chat Completions body, up to `data: [DONE]`.

    An event with blank data carries nothing and is skipped; data that is not
    JSON raises (the reply cannot be trusted past it); an error chunk (or an
    `error` event) raises `remote.ErrorEvent`.
    """
    async with aclosing(sse.events(body, on_invalid_utf8)) as events:
        async for event in events:
            if event.data.startswith("[DONE]"):
                break
            if not event.data.strip():
                continue
            chunk = json.loads(event.data)
            if event.name == "error" or (isinstance(chunk, dict) and chunk.get("error")):
                raise remote.ErrorEvent(chunk)
            yield chunk
        else:
            return  # The body ended: nothing to drain.
    await sse.drain(body)


async def _read(chunks: AsyncIterator[Any]) -> AsyncGenerator[StreamEvent, None]:
    """Translate Chat Completions chunks into stream events.

    Every field is checked, since compatible servers send null, missing or
    oddly typed ones: what carries nothing usable is skipped. Calls are
    assembled by `_Calls`; they are whole once the reply ends for a reason
    that lets them be (`CALLS_ENDED`), and otherwise the last one was cut.
    """
    calls = _Calls()
    finish: str | None = None
    usage: dict[str, Any] = {}
    async for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in remote.items(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = remote.field(choice, "delta", dict) or {}
            if reasoning := _reasoning(delta):
                yield ThinkingDelta(reasoning)
            if content := remote.field(delta, "content", str):
                yield TextDelta(content)
            if finish is None:
                for call in remote.items(delta.get("tool_calls")):
                    for event in calls.take(call):
                        yield event
            if (reason := remote.field(choice, "finish_reason", str)) and finish is None:
                finish = reason
                for event in calls.end(cut=reason not in CALLS_ENDED):
                    yield event
    if finish is None:
        raise ProviderError("The stream ended before the reply did (no finish reason).")
    if usage:
        yield UsageUpdate(
            remote.count(usage, "prompt_tokens"), remote.count(usage, "completion_tokens")
        )
    yield StreamEnd(FINISH_REASONS.get(finish, "stop"))


@dataclass
class _Call:
    index: int
    id: str = ""
    name: str = ""
    started: bool = False


class _Calls:
    """The calls of one reply, assembled from their deltas by `index`.

    A call's start (its id and name) is held back until its arguments begin,
    another call begins, or the reply ends: some compatible servers stream the
    name in pieces (`"re"`, then `"ad"`), others repeat the whole name in
    every delta, which is taken once. Arguments sent as a JSON value rather
    than a string are taken as that value's JSON text.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}

    def take(self, delta: Any) -> list[StreamEvent]:
        if not isinstance(delta, dict):
            return []
        events: list[StreamEvent] = []
        index = delta.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = self._index_of(delta)
        call = self._calls.get(index)
        if call is None:
            events += self._start_all()  # A new call began: the names before it are whole.
            call = self._calls[index] = _Call(index)
        function = remote.field(delta, "function", dict) or {}
        if not call.started:
            call.id = call.id or remote.field(delta, "id", str) or ""
            piece = remote.field(function, "name", str) or ""
            if piece != call.name:  # A server that repeats the whole name sends it again.
                call.name += piece
        if arguments := remote.json_text(function.get("arguments")):
            events += self._start(call)
            events.append(ToolCallDelta(index, arguments))
        return events

    def end(self, *, cut: bool) -> list[StreamEvent]:
        """The reply ended: every call is whole, or all but the last if the reply was `cut`."""
        events = self._start_all()
        ended = list(self._calls)[:-1] if cut else list(self._calls)
        return [*events, *(ToolCallEnd(index) for index in ended)]

    def _index_of(self, delta: dict[str, Any]) -> int:
        """The index of a delta that gives none: a new call if it brings a new id."""
        last = next(reversed(self._calls.values()), None)
        new_id = remote.field(delta, "id", str)
        if last is None:
            return 0
        if new_id and last.id and new_id != last.id:
            return max(self._calls) + 1
        return last.index

    def _start(self, call: _Call) -> list[StreamEvent]:
        if call.started:
            return []
        call.started = True
        return [ToolCallStart(call.index, call.id or f"call_{call.index}", call.name)]

    def _start_all(self) -> list[StreamEvent]:
        return [event for call in self._calls.values() for event in self._start(call)]


def _reasoning(delta: dict[str, Any]) -> str:
    """Reasoning text a compatible server put in the delta, if any."""
    for name in REASONING_FIELDS:
        if value := remote.field(delta, name, str):
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
