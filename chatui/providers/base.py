"""The streaming protocol every provider speaks.

A provider turns one `ModelRequest` into a stream of a few event types and
knows nothing of the UI. The turn runner reads the stream inside
``async with provider.stream(request) as events``; on a stop it cancels the
task doing that read, and the provider closes its underlying stream (the HTTP
response, the llama.cpp job) in the context manager's exit, shielded from the
cancellation so that the cleanup really runs.
"""

from __future__ import annotations

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


class ProviderError(Exception):
    """A provider failure with a message fit to show the user (the turn redacts `secrets`)."""


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
