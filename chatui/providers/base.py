"""The streaming protocol every provider speaks.

A provider turns one `ModelRequest` into a stream of a few event types and
knows nothing of the UI. The turn runner reads the stream inside
``async with provider.stream(request) as events``; on a stop it cancels the
task doing that read, and the provider closes its underlying stream (the HTTP
response, the llama.cpp job) in the context manager's exit, shielded from the
cancellation so that the cleanup really runs.

The rest of what a provider is (its lifecycle, its errors, the `Provider`
protocol) is in `chatui.providers.lifecycle`, and imported here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatui.cancel import CancelToken
from chatui.history import ChatMessage
from chatui.messages import FinishReason

# What every provider module needs with the events: one import.
from chatui.providers.lifecycle import (
    MESSAGE_OVERHEAD,
    ContextOverflow,
    Notice,
    Progress,
    Provider,
    ProviderError,
    ProviderLifecycle,
    estimate_tokens,
    lifecycle_of,
    request_chars,
)

__all__ = [
    "MESSAGE_OVERHEAD",
    "ContextOverflow",
    "ModelRequest",
    "Notice",
    "Progress",
    "PromptProgress",
    "Provider",
    "ProviderError",
    "ProviderLifecycle",
    "RedactedThinking",
    "RetryWait",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ThinkingDelta",
    "ThinkingSigned",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolSpec",
    "UsageUpdate",
    "estimate_tokens",
    "lifecycle_of",
    "request_chars",
]


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
