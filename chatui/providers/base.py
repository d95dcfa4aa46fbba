"""The streaming protocol every provider speaks.

A provider turns one `ModelRequest` into a stream of a few event types and
knows nothing of the UI. The turn runner reads the stream inside
``async with provider.stream(request) as events``; on a stop it cancels the
task doing that read, and the provider closes its underlying stream (the HTTP
response, the llama.cpp job) in the context manager's exit, shielded from the
cancellation so that the cleanup really runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatui.cancel import CancelToken
from chatui.history import ChatMessage
from chatui.messages import FinishReason


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ThinkingDelta:
    """Reasoning text: shown apart from the answer, collapsed, never part of it."""

    text: str


@dataclass(frozen=True)
class ThinkingSigned:
    """The thinking block streaming now ended with this signature (Anthropic)."""

    signature: str


@dataclass(frozen=True)
class RedactedThinking:
    """A thinking block the provider sent encrypted (`data`), kept as received."""

    data: str


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True)
class UsageUpdate:
    """Token counts so far; later updates replace earlier ones."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class PromptProgress:
    """Work without output: `done` of `total` prompt tokens processed so far.

    Not content: it reaches no message, but it shows the stream is alive (a
    long local prefill is not an idle stream) and can be shown as progress.
    """

    done: int
    total: int


@dataclass(frozen=True)
class RetryWait:
    """Not content: the provider waits `seconds` before trying the request again.

    `reason` says why, for the status line ("429", "overloaded"). A stop during
    the wait ends it at once; the wait does not count as an idle stream.
    """

    seconds: float
    reason: str


@dataclass(frozen=True)
class StreamEnd:
    reason: FinishReason


StreamEvent = (
    TextDelta
    | ThinkingDelta
    | ThinkingSigned
    | RedactedThinking
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | UsageUpdate
    | PromptProgress
    | RetryWait
    | StreamEnd
)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: a name, a description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelRequest:
    """One request: the repaired history, the tools, and the turn's cancel token."""

    messages: list[ChatMessage]
    cancel: CancelToken
    tools: list[ToolSpec] = field(default_factory=list)
    conversation_id: str = ""
    continuing: bool = False
    """The last message is the model's own reply, cut short (a stop, max_tokens): the
    model goes on from its last character, and the stream carries only what follows.
    That message holds text alone (no tool call: a call of a cut reply never ran)."""


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
