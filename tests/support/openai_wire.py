"""Chat Completions stream chunks for `wire.WireServer`, and the checks the real servers make.

`validate` refuses a request the way OpenAI does: a parameter it does not
know (vLLM's or llama.cpp's own fields, say) is refused; an assistant message
with `tool_calls` must be followed by one `tool` message per call, and a
`tool` message must answer a call made just before it. A final assistant
message is accepted (OpenAI answers it with a new turn; it does not continue
it). A `tool` message's content is text (a string, or text parts: an image
there is refused). A tool's name fits `^[a-zA-Z0-9_-]{1,64}$`, its
description is 1024 characters at most, and its parameters are an object
schema.

`validate_vllm` checks what vLLM checks of its own fields, on top of the
messages: `continue_final_message` needs a final assistant message and
`add_generation_prompt` off, and (as its Mistral tokenizer does) a final
assistant message needs `continue_final_message`. `llama_cpp_validator` checks
what llama.cpp's server does before it prefills a final assistant message:
no two assistant messages at the end, and no prefill while the model's
`enable_thinking` is on (unless `chat_template_kwargs` turns it off).
`VLLM_MODELS` and `LLAMA_CPP_PROPS` are what each answers about itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.support.wire import Send, Step

DONE = Send("[DONE]")


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish: str | None = None,
    usage: tuple[int, int] | None = None,
) -> Send:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "wire-model",
        "choices": []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return Send(body)


def text(*pieces: str) -> list[Step]:
    return [chunk({"role": "assistant", "content": piece}) for piece in pieces]


def reasoning(*pieces: str, field: str = "reasoning_content") -> list[Step]:
    """Reasoning as compatible servers stream it, in a field the SDK does not know."""
    return [chunk({"role": "assistant", field: piece}) for piece in pieces]


def tool_call(index: int, call_id: str, name: str, *fragments: str) -> list[Step]:
    """A call as OpenAI streams it: id and name first, then argument fragments."""
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name}}
    steps: list[Step] = [chunk({"tool_calls": [{**first, "function": {**first["function"]}}]})]
    steps += [
        chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        for part in fragments
    ]
    return steps


def call_delta(index: int, **fields: Any) -> Send:
    """One delta of call `index` with just `fields` (`id`, `name`, `arguments`), of any type.

    For servers that differ from OpenAI: a name in pieces, arguments sent as
    an object, an id repeated in every delta.
    """
    call: dict[str, Any] = {"index": index}
    if "id" in fields:
        call["id"] = fields.pop("id")
    if fields:
        call["function"] = fields
    return chunk({"tool_calls": [call]})


def tool_call_without_id(index: int, name: str, *fragments: str) -> list[Step]:
    """A call as some compatible servers stream it: no `id` at all."""
    first = chunk(
        {"tool_calls": [{"index": index, "type": "function", "function": {"name": name}}]}
    )
    return [first, *tool_call(index, "", name, *fragments)[1:]]


def ending(finish: str = "stop", usage: tuple[int, int] = (10, 5)) -> list[Step]:
    """The finish chunk, the usage chunk (empty choices), then [DONE]."""
    return [chunk(finish=finish), chunk(usage=usage), DONE]


def reply(*pieces: str, usage: tuple[int, int] = (10, 5)) -> list[Step]:
    return [*text(*pieces), *ending("stop", usage)]


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


OPENAI_PARAMETERS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "reasoning_effort",
        "user",
        "metadata",
        "store",
    }
)
"""Chat Completions parameters OpenAI knows; it refuses any other."""

VLLM_MODELS = {
    "object": "list",
    "data": [{"id": "wire-model", "object": "model", "owned_by": "vllm", "max_model_len": 8192}],
}
LLAMA_CPP_PROPS = {"default_generation_settings": {"n_ctx": 8192}, "chat_template": "..."}


TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_COUNT = 128  # Tools in one request, at most.


def _tool_problem(n: int, tool: Any) -> str | None:
    """Why OpenAI would refuse the `n`-th tool's definition, or None."""
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict):
        return f"Missing required parameter: 'tools[{n}].function'."
    name, description = function.get("name"), function.get("description", "")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        return (
            f"Invalid 'tools[{n}].function.name': string does not match pattern. Expected a "
            "string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'."
        )
    if isinstance(description, str) and len(description) > 1024:
        return (
            f"Invalid 'tools[{n}].function.description': string too long. Expected a string "
            f"with maximum length 1024, but got a string with length {len(description)} instead."
        )
    kind = (function.get("parameters") or {"type": "object"}).get("type")
    if kind != "object":
        return (
            f"Invalid schema for function '{name}': schema must be a JSON Schema of "
            f"'type: \"object\"', got 'type: \"{kind}\"'."
        )
    return None


def validate(body: dict[str, Any]) -> dict[str, Any] | None:
    """None if OpenAI would accept `body`, else its error body."""
    if unknown := sorted(set(body) - OPENAI_PARAMETERS):
        return _error(f"Unrecognized request argument supplied: {unknown[0]}")
    if len(body.get("tools") or []) > TOOL_COUNT:
        return _error(
            "Invalid 'tools': array too long. Expected an array with maximum length "
            f"{TOOL_COUNT}, but got an array with length {len(body['tools'])} instead."
        )
    for n, tool in enumerate(body.get("tools") or []):
        if problem := _tool_problem(n, tool):
            return _error(problem)
    return validate_messages(body)


def validate_vllm(body: dict[str, Any]) -> dict[str, Any] | None:
    """None if vLLM would accept `body`, else its error body."""
    if refused := validate_messages(body):
        return refused
    continuing = bool(body.get("continue_final_message", False))
    generation_prompt = bool(body.get("add_generation_prompt", True))
    last = body["messages"][-1].get("role")
    if continuing and generation_prompt:
        return _error(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    if generation_prompt and last == "assistant":
        return _error(
            "Cannot set `add_generation_prompt` to True when the last message is from the "
            "assistant. Consider using `continue_final_message` instead."
        )
    if continuing and last != "assistant":
        return _error(
            "Cannot set `continue_final_message` to True when the last message is not from "
            "the assistant."
        )
    return None


def llama_cpp_validator(*, thinking: bool = False) -> Callable[[dict[str, Any]], Any]:
    """llama.cpp's server's checks, for a model whose `enable_thinking` is `thinking`."""

    def check(body: dict[str, Any]) -> dict[str, Any] | None:
        if refused := validate_messages(body):
            return refused
        messages = body["messages"]
        if messages[-1].get("role") != "assistant":
            return None
        if len(messages) > 1 and messages[-2].get("role") == "assistant":
            return _error("Cannot have 2 or more assistant messages at the end of the list.")
        kwargs = body.get("chat_template_kwargs") or {}
        if kwargs.get("enable_thinking", thinking):
            return _error("Assistant response prefill is incompatible with enable_thinking.")
        return None

    return check


def validate_messages(body: dict[str, Any]) -> dict[str, Any] | None:
    """None if `body`'s messages are a history OpenAI accepts, else its error body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error("'messages' must be a non-empty array")
    if body.get("stream") and not isinstance(body.get("model"), str):
        return _error("you must provide a model parameter")
    expected: list[str] = []  # Tool call ids still owed a tool message.
    for n, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            content = message.get("content")
            parts = content if isinstance(content, list) else []
            if any(isinstance(p, dict) and p.get("type") != "text" for p in parts):
                return _error(
                    "Image URLs are only allowed for messages with role 'user', but this "
                    "message with role 'tool' contains an image URL."
                )
            if not isinstance(content, str | list):
                return _error(f"messages[{n}]: content must be a string or an array of parts")
            call_id = message.get("tool_call_id")
            if call_id not in expected:
                return _error(
                    f"messages[{n}]: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
            expected.remove(call_id)
            continue
        if expected:
            return _error(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(expected)}"
            )
        if role not in {"system", "developer", "user", "assistant"}:
            return _error(f"messages[{n}]: invalid role {role!r}")
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if not calls and not message.get("content"):
                return _error(f"messages[{n}]: an assistant message needs content or tool_calls")
            expected = [call["id"] for call in calls]
        elif not isinstance(message.get("content"), str):
            return _error(f"messages[{n}]: content must be a string")
    if expected:
        return _error(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id': {', '.join(expected)}"
        )
    return None
