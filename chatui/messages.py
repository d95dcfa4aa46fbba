"""The conversation model: prompts, model responses made of parts, tool results.

Everything here is plain data. A `ModelResponse` ends in exactly one of the
states `complete`, `interrupted` or `failed`; while it streams it is
`streaming`, a state that the store turns into `interrupted` if the app died
before the response ended.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
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


ARGUMENT_DEPTH = 100  # Levels of arrays and objects in a call's arguments, at most.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def nests_too_deep(arguments: str) -> bool:
    """Whether a call's argument text nests its arrays and objects over `ARGUMENT_DEPTH` levels.

    Counted without parsing: Python's JSON parser, and everything that walks
    what it parsed (schema checks, the local prompt's formatting, the SDKs'
    encoders), recurse, and a model can write a thousand `{`. Such a call is
    never run, and the history sends it with no arguments.
    """
    if arguments.count("{") + arguments.count("[") <= ARGUMENT_DEPTH:
        return False
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", arguments)):
        depth += 1 if bracket in "[{" else -1
        if depth > ARGUMENT_DEPTH:
            return True
    return False


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
    counted_from: int = 0  # Content events the reply had before these timings (a continue).

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    def tokens_per_second(self, received: int) -> float | None:
        """Streaming speed over `received` content events (about one per token)."""
        received -= self.counted_from  # Those of this request only.
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
    continued: int = 0  # Times it was continued after it stopped short ("Continue").
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


def byte_size(size: int) -> str:
    """A size in bytes as people read it: "512 B", "3.4 kB", "1.2 MB"."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


@dataclass(frozen=True)
class Attachment:
    """Binary content a tool returned (an MCP server's image or audio, say).

    `content` already says what it is ("[image/png, 12.3 kB]"), for the
    screen and for the models that take text only; `data` (base64) is kept
    for the APIs that take the content itself in a tool result (Anthropic's
    images), and is "" when it was not kept (too large, or of a kind no API
    takes).
    """

    mime_type: str
    size: int  # Bytes, decoded.
    data: str = ""


@dataclass
class ToolResult:
    """The result of running one tool call.

    `content` is the text the model and the user see. `attachments`: binary
    content beside it; `structured`: the tool's structured result (an MCP
    `structuredContent`), kept as the tool gave it (JSON).
    """

    call_id: str
    name: str
    content: str
    state: ToolResultState = "ok"
    id: str = field(default_factory=new_id)
    kind: Literal["tool_result"] = "tool_result"
    attachments: list[Attachment] = field(default_factory=list)
    structured: Any = None


Item = UserPrompt | ModelResponse | ToolResult


@dataclass(frozen=True)
class BranchOrigin:
    """Where a forked conversation came from: the original's id and its title at the fork.

    The title is kept so that "branched from …" still reads right once the
    original is renamed or deleted.
    """

    conversation_id: str
    title: str


@dataclass(frozen=True)
class ModelRef:
    """A provider and a model, as a conversation keeps the one it answers with.

    `model` is what `create_provider` takes ("" for the provider's configured
    model; a GGUF path for the local provider).
    """

    provider: str
    model: str = ""


@dataclass(frozen=True)
class QueuedMessage:
    """A message typed while a reply streamed, waiting to be sent.

    Sending it turns it into `prompt()`, a `UserPrompt` with the same id: the
    store's `save_item` of that prompt removes the queued message in the same
    transaction, so it is never both queued and sent, nor neither.
    """

    id: str
    text: str

    def prompt(self) -> UserPrompt:
        """The prompt this message becomes once sent (same id, same text)."""
        return UserPrompt(self.text, id=self.id)


@dataclass
class Conversation:
    """A titled tree of items, and the path through it that is shown: `items`.

    Every item has a parent: the item before it on its path (None for a first
    item). Items of one kind that share a parent are versions of each other: a
    retried reply is a sibling of the old reply (both children of the prompt),
    an edited prompt a sibling of the old prompt. `items` is the selected path,
    oldest first: what the screen shows and the history sends.

    Code that only reads `items`, appends to it or takes back what it appended
    needs nothing else: an item appended to `items` is a child of the item
    before it, and one removed from it that has no other versions below it (a
    prompt never kept) is forgotten. The tree catches up with `items` whenever
    it is asked something. To make a new version:

    - Retry: `rewind_to(prompt.id)`, then append the new reply.
    - Edit the last prompt: `rewind_to(parent_of(prompt.id))`, then append the
      new prompt.
    - Flip between versions: `select(version.id)`.

    Then save each new item with `parent=conversation.parent_of(item.id)`, and a
    `select` with the store's `set_leaf(conversation.id, conversation.leaf)`.

    `view_start` is the id of the first item the model still sees, once the
    conversation outgrew its context window (None: it sees them all).
    `branched_from` names the conversation this one was forked from.
    `system_prompt` and `model` are its own settings, kept with it (None: the
    config's system prompt, the model the session uses).

    A long conversation loaded from the store may hold items not read yet
    (`chatui.lazy_items`): each is an instance of its item's class that reads
    itself, and the others, the first time a field other than its id is read.
    None of the above changes for them.
    """

    id: str = field(default_factory=new_id)
    title: str = "New conversation"
    items: list[Item] = field(default_factory=list)
    view_start: str | None = None
    branched_from: BranchOrigin | None = None
    system_prompt: str | None = None
    model: ModelRef | None = None
    # Every item known, shown or not, in stored order, each one's parent, and the ids of
    # each item's children (None: of the first items) in stored order.
    _known: dict[str, Item] = field(default_factory=dict, init=False, repr=False, compare=False)
    _parents: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _children: dict[str | None, list[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # `items` when the tree last caught up with it: the same objects.
    _shown: list[Item] = field(default_factory=list, init=False, repr=False, compare=False)

    @classmethod
    def from_tree(
        cls,
        id: str,
        title: str,
        stored: Iterable[tuple[Item, str | None]],
        leaf: str | None,
        *,
        view_start: str | None = None,
        branched_from: BranchOrigin | None = None,
        system_prompt: str | None = None,
        model: ModelRef | None = None,
    ) -> Conversation:
        """Rebuild a conversation from its (item, parent id) pairs in stored order.

        The shown path ends at `leaf` (None: nothing is shown). A parent that is
        not stored before its child makes the child a first item, and a leaf
        that is not stored shows the path to the latest item, so damaged rows
        still show everything they can.
        """
        conversation = cls(
            id=id,
            title=title,
            view_start=view_start,
            branched_from=branched_from,
            system_prompt=system_prompt,
            model=model,
        )
        known = conversation._known
        for item, parent in stored:
            if item.id in known:  # Stored twice (a damaged store): the later row counts.
                conversation._unlink(item.id)
            conversation._link(item, parent if parent in known else None)
        if leaf is not None and leaf not in known:
            leaf = next(reversed(known), None)
        conversation.items = [] if leaf is None else conversation._path(leaf)
        conversation._shown = list(conversation.items)
        return conversation

    @property
    def leaf(self) -> str | None:
        """The id of the last item shown (None when nothing is)."""
        return self.items[-1].id if self.items else None

    def all_items(self) -> list[Item]:
        """Every item, shown or not (all versions), in stored order."""
        self._catch_up()
        return list(self._known.values())

    def tree(self) -> list[tuple[Item, str | None]]:
        """Every item with its parent's id, in stored order: what `from_tree` takes.

        One pass, where `parent_of` for each item would cost the shown path's length each.
        """
        self._catch_up()
        return [(item, self._parents[item.id]) for item in self._known.values()]

    def parent_of(self, item_id: str) -> str | None:
        """The id of the item before `item_id` on its path (None for a first item)."""
        self._catch_up()
        if item_id not in self._known:
            raise KeyError(item_id)
        return self._parents[item_id]

    def path_to(self, item_id: str) -> list[Item]:
        """The items from the first one down to `item_id`, oldest first."""
        self._catch_up()
        if item_id not in self._known:
            raise KeyError(item_id)
        return self._path(item_id)

    def children_of(self, item_id: str | None) -> list[Item]:
        """The items whose parent is `item_id` (None: the first items), in stored order.

        One pass over the tree, so that finding replies to a few prompts stays
        linear in a long conversation.
        """
        self._catch_up()
        return [self._known[child] for child in self._children.get(item_id, ())]

    def versions(self, item: Item) -> list[Item]:
        """`item` and its siblings of the same kind, in stored order (oldest version first)."""
        parent = self.parent_of(item.id)
        siblings = (self._known[other] for other in self._children[parent])
        return [other for other in siblings if other.kind == item.kind]

    def version_of(self, item: Item) -> tuple[int, int]:
        """Which version `item` is, and of how many: (2, 3) shows as "2/3"."""
        ids = [version.id for version in self.versions(item)]
        return ids.index(item.id) + 1, len(ids)

    def select(self, item_id: str) -> None:
        """Show version `item_id`: the path to it, then down to its latest item.

        The latest item below it is the most recently stored one: a version
        comes back with the last exchange made after it.
        """
        self._catch_up()
        if item_id not in self._known:
            raise KeyError(item_id)
        below = {item_id}
        for other, parent in self._parents.items():  # Stored order: parents come first.
            if parent in below:
                below.add(other)
        latest = next(other for other in reversed(self._known) if other in below)
        self._show(self._path(latest))

    def rewind_to(self, item_id: str | None) -> None:
        """Show the path up to `item_id` only (None: nothing), keeping every item.

        The next item appended to `items` is then a child of `item_id`: a new
        version of the item that followed it.
        """
        self._catch_up()
        if item_id is not None and item_id not in self._known:
            raise KeyError(item_id)
        self._show([] if item_id is None else self._path(item_id))

    def _path(self, item_id: str) -> list[Item]:
        path: list[Item] = []
        at: str | None = item_id
        while at is not None and at in self._known and len(path) <= len(self._known):
            path.append(self._known[at])
            at = self._parents[at]
        path.reverse()
        return path

    def _show(self, path: list[Item]) -> None:
        self.items[:] = path  # In place: whoever holds the list sees the new path.
        self._shown = list(path)

    def _catch_up(self) -> None:
        """Make the tree agree with `items` as others appended to it or removed from it.

        Asked at every question, so the check that nothing changed compares the
        objects of the two lists (by identity first, in C), not their ids.
        """
        if self.items == self._shown:
            return
        on_path = {item.id for item in self.items}
        for gone in reversed(self._shown):  # Newest first: its children go before it.
            if gone.id in on_path or gone.id not in self._known:
                continue
            if not self._children.get(gone.id):  # No other version hangs below it.
                self._unlink(gone.id)
        parent: str | None = None
        for item in self.items:
            if item.id in self._known:
                self._known[item.id] = item
            else:
                self._link(item, parent)
            parent = item.id
        self._shown = list(self.items)

    def _link(self, item: Item, parent: str | None) -> None:
        """Add `item`, the newest item stored, as a child of `parent`."""
        self._known[item.id] = item
        self._parents[item.id] = parent
        self._children.setdefault(parent, []).append(item.id)

    def _unlink(self, item_id: str) -> None:
        """Forget item `item_id` (whatever hung below it now hangs nowhere: see `_path`)."""
        del self._known[item_id]
        siblings = self._children[self._parents.pop(item_id)]
        siblings.remove(item_id)


def item_to_dict(item: Item) -> dict[str, Any]:
    """Serialize an item to JSON-ready data."""
    return asdict(item)


def item_from_dict(data: dict[str, Any]) -> Item:
    """Rebuild an item from `item_to_dict` output."""
    kind = data.get("kind")
    if kind == "prompt":
        return UserPrompt(**data)
    if kind == "tool_result":
        fields = dict(data)
        fields["attachments"] = [Attachment(**a) for a in data.get("attachments", [])]
        return ToolResult(**fields)
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
