"""What a provider is besides its stream: its lifecycle, its errors, the `Provider` protocol.

Apart from `chatui.providers.base` (the stream's events and the request) so
that the session and the screens, which need only this, start without
building the event classes: a dataclass costs about 0.3 ms to create on
Python 3.11, and the first frame does not wait for the thirteen of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from chatui.history import ChatMessage
    from chatui.providers.base import ModelRequest, StreamEvent, ToolSpec


class ProviderError(Exception):
    """A provider failure with a message fit to show the user (the turn redacts `secrets`)."""


class ContextOverflow(ProviderError):
    """The server refused the request as longer than the model's context window.

    `window` is the window the server named and `prompt_tokens` what it
    counted in the request, where it said; the turn then trims the history to
    fit and sends once more.
    """

    def __init__(
        self, message: str, window: int | None = None, prompt_tokens: int | None = None
    ) -> None:
        super().__init__(message)
        self.window, self.prompt_tokens = window, prompt_tokens


Progress = Callable[[str], None]
Notice = Callable[[str], None]


def _ignore(_message: str) -> None:
    """Nobody to tell."""


class ProviderLifecycle:
    """What a provider does besides streaming; each step is a no-op unless overridden.

    The session calls `prepare` once at startup (in the background, while the
    user types), `conversation_left` when the user moves to another
    conversation, and `close` on quitting. `on_notice` is set by the session:
    the provider passes it problems that did not stop a turn (untrusted
    text), on the event loop's thread.
    """

    on_notice: Notice = staticmethod(_ignore)
    learned_context_window: int | None = None  # From a server's "too long" error.
    window_setting = ""  # The config key that can make the window larger, if the user can.
    chars_per_token: float = 3.0  # For estimates; the turn refines it from reported usage.

    @property
    def context_window(self) -> int | None:
        """The model's context window in tokens, known without I/O, or None."""
        return self.learned_context_window

    @property
    def reply_room(self) -> int:
        """Tokens a request leaves free for the reply (the configured max_tokens)."""
        return 0

    async def count_tokens(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> int:
        """The request's prompt in tokens: exact where the provider can tell, else estimated."""
        return estimate_tokens(messages, tools, self.chars_per_token)

    @property
    def secrets(self) -> Sequence[str]:
        """Never to be shown: the turn redacts them from error texts."""
        return ()

    def unavailable(self) -> str | None:
        """Why no request can be made, known without any I/O (a missing key), or None."""
        return None

    async def problem(self) -> str | None:
        """Why the provider cannot answer now (`unavailable`, a server out of reach), or None."""
        return self.unavailable()

    async def prepare(self, progress: Progress = _ignore) -> None:
        """Get ready for requests (load a model), reporting progress; raise ProviderError."""

    async def conversation_left(self) -> None:
        """The user moved on from the conversation of the last request."""

    async def close(self) -> None:
        """Release what the provider holds; no request follows."""


MESSAGE_OVERHEAD = 8  # Tokens of a message's framing (role, separators), generously.


def request_chars(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> int:
    """Characters a request's prompt holds: contents, calls and tool schemas."""
    chars = sum(
        len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls) for m in messages
    )
    return chars + sum(
        len(t.name) + len(t.description) + len(json.dumps(t.parameters)) for t in tools
    )


def estimate_tokens(
    messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], chars_per_token: float
) -> int:
    """A request's tokens from its characters, erring high: framing counts per message."""
    chars = request_chars(messages, tools)
    return math.ceil(chars / chars_per_token) + MESSAGE_OVERHEAD * (len(messages) + len(tools))


def lifecycle_of(provider: object) -> ProviderLifecycle:
    """`provider`'s lifecycle: its own, or the no-op one for a provider without it."""
    return provider if isinstance(provider, ProviderLifecycle) else ProviderLifecycle()


class Provider(Protocol):
    """A model behind a streaming API (most also inherit `ProviderLifecycle`)."""

    name: str
    model: str

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a stream for `request`; leaving the context closes it for real."""
        ...
