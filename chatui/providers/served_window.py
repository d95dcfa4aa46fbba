"""What an OpenAI-compatible server tells of itself: which server it is, and its model's window.

- vLLM lists each model's `max_model_len` in `GET /v1/models` (`owned_by`
  "vllm").
- llama.cpp's server gives its `n_ctx` in `GET /props` (at the server's root,
  under `default_generation_settings`, or at the top in older builds); its
  `/v1/models` says `owned_by` "llamacpp".

Which server it is decides how a reply is continued (`openai_chat`): vLLM and
llama.cpp's server continue a final assistant message. Only the model's own
entry of `/v1/models` says which server answers it (a gateway lists models of
several); a `/props` with a window says llama.cpp. OpenAI itself, Ollama, LM
Studio, SGLang and llama-cpp-python's `llama_cpp.server` report neither: their
kind is "unknown", and chatui learns their window from their first "too long"
refusal. Asking is a courtesy, never a condition: any failure, odd shape or
slow answer (`ASK_TIMEOUT`) is "unknown". What a server sends is untrusted:
only a positive integer is taken as a window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from chatui.providers.remote import integer

ASK_TIMEOUT = 2.0  # Seconds; the first turn waits at most this long for the answer.

Get = Callable[[str], Awaitable[Any]]  # GET a URL (relative to base_url, or whole): its JSON.
ServerKind = Literal["vllm", "llama.cpp", "unknown"]


@dataclass(frozen=True)
class Served:
    """What the server said of itself."""

    kind: ServerKind = "unknown"
    window: int | None = None  # Its model's context window in tokens, if it said.


async def served(get: Get, base_url: str, model: str) -> Served:
    """What the server at `base_url` says of itself and of `model`.

    `/props` is asked only when `/v1/models` gave no window for `model`.
    """
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            kind, window = await _models(get, model)
            if window is None:
                props = await _props(get, base_url)
                if props is not None:
                    return Served("llama.cpp" if kind == "unknown" else kind, props)
            return Served(kind, window)
    except TimeoutError:
        return Served()


OWNERS: dict[str, ServerKind] = {"vllm": "vllm", "llamacpp": "llama.cpp"}
"""The `owned_by` each server writes on the models it lists, and the server it names."""


async def _models(get: Get, model: str) -> tuple[ServerKind, int | None]:
    """Which server `model`'s own entry of `/v1/models` names, and its window.

    Only that entry counts: a gateway lists models of several servers (a vLLM
    one beside an OpenAI one), and SGLang lists `max_model_len` as vLLM does.
    """
    with contextlib.suppress(Exception):  # No such list: unknown here.
        listed = await get("models")
        entries = listed.get("data", []) if isinstance(listed, dict) else []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == model:
                owner = entry.get("owned_by")
                kind = OWNERS.get(owner, "unknown") if isinstance(owner, str) else "unknown"
                return kind, _positive(entry.get("max_model_len"))
    return "unknown", None


async def _props(get: Get, base_url: str) -> int | None:
    """llama.cpp's window from `/props`, or None (not a llama.cpp server, or no window)."""
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
