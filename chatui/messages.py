"""The conversation model: prompts, model responses made of parts, tool results.

Everything here is plain data. A `ModelResponse` ends in exactly one of the
states `complete`, `interrupted` or `failed`; while it streams it is
`streaming`, a state that the store turns into `interrupted` if the app died
before the response ended.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal


def new_id() -> str:
    """A fresh random identifier for a conversation item."""
    return uuid.uuid4().hex


class ResponseState(StrEnum):
    """How a model response ended (or that it has not ended yet)."""

    STREAMING = "streaming"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self is not ResponseState.STREAMING


FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass
class TextPart:
    """Text the model wrote."""

    text: str = ""
    kind: Literal["text"] = "text"


@dataclass
class ToolCallPart:
    """A tool call, with its raw argument text as streamed.

    `complete` is true only once the provider said the call's arguments ended;
    a call cut off by a stop keeps its partial `arguments` and stays incomplete.
    """

    id: str
    name: str
    arguments: str = ""
    complete: bool = False
    kind: Literal["tool_call"] = "tool_call"


@dataclass
class ThinkingPart:
    """Reasoning the model streamed apart from its answer, never merged into it.

    Anthropic signs a thinking block (`signature`), and a `redacted_thinking`
    block holds only encrypted `data`; both are sent back unmodified. Reasoning
    from an OpenAI-compatible server has neither and is only shown.
    """

    text: str = ""
    signature: str = ""
    data: str = ""  # A redacted block's encrypted content; `text` is then empty.
    kind: Literal["thinking"] = "thinking"

    @property
    def redacted(self) -> bool:
        return bool(self.data)


Part = TextPart | ToolCallPart | ThinkingPart
_PARTS: dict[str, type[Part]] = {
    "text": TextPart,
    "tool_call": ToolCallPart,
    "thinking": ThinkingPart,
}


@dataclass
class Usage:
    """Token counts for one response; `estimated` when the provider gave none."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False


@dataclass
class Timings:
    """Monotonic-clock instants of one response, in seconds."""

    started: float = 0.0
    first_token: float | None = None
    last_token: float | None = None
    ended: float | None = None

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    def tokens_per_second(self, received: int) -> float | None:
        """Streaming speed over `received` content events (about one per token)."""
        if self.first_token is None or self.last_token is None or received < 2:
            return None
        span = self.last_token - self.first_token
        return (received - 1) / span if span > 0 else None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


@dataclass
class UserPrompt:
    """What the user typed."""

    text: str
    id: str = field(default_factory=new_id)
    kind: Literal["prompt"] = "prompt"


@dataclass
class ModelResponse:
    """One model request's reply: its parts, how it ended, usage and timings."""

    provider: str
    model: str
    parts: list[Part] = field(default_factory=list)
    state: ResponseState = ResponseState.STREAMING
    finish_reason: FinishReason | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    received: int = 0  # Content events received: about one per token.
    id: str = field(default_factory=new_id)
    kind: Literal["response"] = "response"

    @property
    def text(self) -> str:
        """All text parts joined."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    @property
    def thinking(self) -> list[ThinkingPart]:
        return [p for p in self.parts if isinstance(p, ThinkingPart)]

    def append_text(self, text: str) -> None:
        """Append streamed text, extending the last text part when there is one."""
        if self.parts and isinstance(self.parts[-1], TextPart):
            self.parts[-1].text += text
        else:
            self.parts.append(TextPart(text))

    def append_thinking(self, text: str) -> ThinkingPart:
        """Add reasoning to the last part if it is unsigned reasoning, else to a new one."""
        last = self.parts[-1] if self.parts else None
        if not (isinstance(last, ThinkingPart) and not last.signature and not last.data):
            last = ThinkingPart()
            self.parts.append(last)
        last.text += text
        return last


ToolResultState = Literal["ok", "error", "denied", "cancelled"]


@dataclass
class ToolResult:
    """The result of running one tool call."""

    call_id: str
    name: str
    content: str
    state: ToolResultState = "ok"
    id: str = field(default_factory=new_id)
    kind: Literal["tool_result"] = "tool_result"


Item = UserPrompt | ModelResponse | ToolResult


@dataclass
class Conversation:
    """A titled list of items, oldest first.

    `view_start` is the id of the first item the model still sees, once the
    conversation outgrew its context window (None: it sees them all).
    """

    id: str = field(default_factory=new_id)
    title: str = "New conversation"
    items: list[Item] = field(default_factory=list)
    view_start: str | None = None


def item_to_dict(item: Item) -> dict[str, Any]:
    """Serialize an item to JSON-ready data."""
    return asdict(item)


def item_from_dict(data: dict[str, Any]) -> Item:
    """Rebuild an item from `item_to_dict` output."""
    kind = data.get("kind")
    if kind == "prompt":
        return UserPrompt(**data)
    if kind == "tool_result":
        return ToolResult(**data)
    if kind == "response":
        fields = dict(data)
        try:
            fields["parts"] = [_PARTS[p["kind"]](**p) for p in data["parts"]]
        except KeyError as error:
            raise ValueError(f"unknown part kind {error}") from None
        fields["state"] = ResponseState(data["state"])
        fields["usage"] = Usage(**data["usage"])
        fields["timings"] = Timings(**data["timings"])
        return ModelResponse(**fields)
    raise ValueError(f"unknown item kind {kind!r}")
