"""Telling a "longer than the context window" refusal from other errors, and its window.

Servers say it in their own words. Those known here, with the window they name:

- OpenAI, vLLM and llama-cpp-python's server: "This model's maximum context length
  is 8192 tokens. However, …" (the error code is `context_length_exceeded`).
- llama.cpp's server: error type `exceed_context_size_error`, with `n_ctx` in the body.
- LM Studio: "… the model is loaded with context length of only 4096 tokens".
- Anthropic: "prompt is too long: 208310 tokens > 200000 maximum", or "input length
  and `max_tokens` exceed context limit: 198000 + 8192 > 200000 …".

A refusal recognised without a window still counts: the turn then takes a
window under what it sent. The text is the server's, so only numbers are
taken from it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chatui.providers.base import ContextOverflow, ProviderError

_SIGNS = (
    "context_length_exceeded",
    "exceed_context_size",
    "maximum context length",
    "context length of only",
    "prompt is too long",
    "exceed context limit",
)
# Other errors mention the context window too (a feature not offered, say): it is a sign
# only with words saying that something went past it ("input exceeds the context window").
_WEAK_SIGN = "context window"
_PAST_IT = ("exceed", "too long", "too large", "longer than", "too many tokens")
_PROMPT = (
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"(?:resulted in|your request has|you requested) (\d+) (?:input )?tokens"),
    re.compile(r"prompt is too long: (\d+) tokens"),
    re.compile(r"exceed context limit: (\d+) \+"),
)
_WINDOW = (
    re.compile(r"maximum context length is (\d+) tokens"),
    re.compile(r"context length of only (\d+) tokens"),
    re.compile(r"(\d+) tokens > (\d+) maximum"),
    re.compile(r"exceed context limit: [\d\s+]+> (\d+)"),
)


def as_overflow(error: BaseException, explained: ProviderError) -> ProviderError:
    """`explained`, as a `ContextOverflow` if `error` refused a request as too long."""
    body = getattr(error, "body", None)
    text = f"{_text(body)}\n{getattr(error, 'message', '')}\n{explained}".lower()
    weak = _WEAK_SIGN in text and any(words in text for words in _PAST_IT)
    if not weak and not any(sign in text for sign in _SIGNS):
        return explained
    return ContextOverflow(str(explained), _window(body, text), _prompt_tokens(body, text))


def _window(body: Any, text: str) -> int | None:
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(n_ctx := error.get("n_ctx"), int) and n_ctx > 0:
        return n_ctx
    for pattern in _WINDOW:
        if match := pattern.search(text):
            return int(match.groups()[-1])
    return None


def _prompt_tokens(body: Any, text: str) -> int | None:
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(n := error.get("n_prompt_tokens"), int) and n > 0:
        return n
    for pattern in _PROMPT:
        if match := pattern.search(text):
            return int(match.group(1))
    return None


def _text(body: Any) -> str:
    try:
        return body if isinstance(body, str) else json.dumps(body)
    except (TypeError, ValueError):
        return ""
