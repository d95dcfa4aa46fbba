"""The context window an OpenAI-compatible server reports for its model, where it does.

- vLLM lists each model's `max_model_len` in `GET /v1/models`.
- llama.cpp's server gives its `n_ctx` in `GET /props` (at the server's root,
  under `default_generation_settings`, or at the top in older builds).

OpenAI itself, Ollama and LM Studio report no window here: chatui then learns
it from their first "too long" refusal. Asking is a courtesy, never a
condition: any failure, odd shape or slow answer (`ASK_TIMEOUT`) is "unknown".
What a server sends is untrusted: only a positive integer is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chatui.providers.remote import integer

ASK_TIMEOUT = 2.0  # Seconds; the first turn waits at most this long for the answer.

Get = Callable[[str], Awaitable[Any]]  # GET a URL (relative to base_url, or whole): its JSON.


async def served_window(get: Get, base_url: str, model: str) -> int | None:
    """The window the server at `base_url` reports for `model`, or None."""
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            return await _models_window(get, model) or await _props_window(get, base_url)
    except TimeoutError:
        return None


async def _models_window(get: Get, model: str) -> int | None:
    with contextlib.suppress(Exception):  # Not a vLLM, or no such list: unknown here.
        listed = await get("models")
        entries = listed.get("data", []) if isinstance(listed, dict) else []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model:
                return _positive(entry.get("max_model_len"))
    return None


async def _props_window(get: Get, base_url: str) -> int | None:
    try:
        props = await get(_root(base_url) + "/props")
    except Exception:  # Not a llama.cpp server: unknown.
        return None
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    nested = settings.get("n_ctx") if isinstance(settings, dict) else None
    return _positive(nested) or _positive(props.get("n_ctx"))


def _root(base_url: str) -> str:
    """The server's root: `base_url` without a trailing `/v1`."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _positive(value: object) -> int | None:
    number = integer(value)
    return number if number is not None and number > 0 else None
