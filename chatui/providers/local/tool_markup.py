"""Parse `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` markup incrementally.

Local models write tool calls as text. `ToolCallMarkupParser` turns the text
stream into stream events as it arrives: plain text outside the tags, and a
tool call's start (once its name is known), argument deltas and end. A tag
split across tokens is held back until it is complete, so no partial
`<tool_ca` ever reaches the screen. A call still open when the stream stops
has no end event: it stays incomplete and is never run.

Call ids are `<id_prefix>_<n>`; the default prefix is fresh and random for
each parser (one per request), so ids never repeat within a conversation.
"""

from __future__ import annotations

import re
import secrets

from chatui.providers.base import StreamEvent, TextDelta, ToolCallDelta, ToolCallEnd, ToolCallStart

OPEN, CLOSE = "<tool_call>", "</tool_call>"
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")  # What the Anthropic API accepts.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class ToolCallMarkupParser:
    """Feed text in; get text and tool-call events out."""

    def __init__(self, id_prefix: str | None = None) -> None:
        """`id_prefix` must match `ID_PATTERN`; None: a fresh `call_<12 hex digits>`."""
        self.id_prefix = id_prefix if id_prefix is not None else new_call_prefix()
        if not ID_PATTERN.fullmatch(self.id_prefix):
            raise ValueError(f"bad tool-call id prefix {self.id_prefix!r}")
        self._buffer = ""
        self._in_call = False
        self._started = False
        self._wrapped = False
        self._head = ""
        self._pending = ""
        self._sent_any = False
        self._index = -1

    def feed(self, text: str) -> list[StreamEvent]:
        self._buffer += text
        events: list[StreamEvent] = []
        while True:
            tag = CLOSE if self._in_call else OPEN
            at = self._buffer.find(tag)
            if at < 0:
                keep = _partial_suffix(self._buffer, tag)
                ready, self._buffer = self._split(len(self._buffer) - keep)
                events += self._content(ready, final=False)
                return events
            ready, rest = self._buffer[:at], self._buffer[at + len(tag) :]
            self._buffer = ""
            events += self._content(ready, final=True)
            self._buffer = rest
            if self._in_call:
                self._in_call = False
            else:
                self._in_call, self._started, self._head = True, False, ""
                self._index += 1

    def finish(self) -> list[StreamEvent]:
        """End of stream: release held-back text (an open call stays incomplete)."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:  # What is held back here is the start of the closing tag.
            return self._content("" if CLOSE.startswith(rest) else rest, final=False, flush=True)
        return [TextDelta(rest)] if rest else []

    def _split(self, at: int) -> tuple[str, str]:
        return self._buffer[:at], self._buffer[at:]

    def _content(self, text: str, *, final: bool, flush: bool = False) -> list[StreamEvent]:
        if not self._in_call:
            return [TextDelta(text)] if text else []
        events: list[StreamEvent] = []
        if not self._started:
            self._head += text
            match = _HEAD.match(self._head)
            if match is None and not final and not flush:
                return []
            name = match.group(1) if match else ""
            events.append(ToolCallStart(self._index, f"{self.id_prefix}_{self._index}", name))
            self._started, self._wrapped = True, match is not None
            text = self._head[match.end() :] if match else self._head
            self._pending, self._sent_any = "", False
        self._pending += text
        if not self._sent_any:
            self._pending = self._pending.lstrip()
        if final:
            arguments = self._pending.rstrip()
            if self._wrapped and arguments.endswith("}"):
                arguments = arguments[:-1].rstrip()
            send, self._pending = arguments, ""
        else:
            # Hold back a trailing "}" (and spaces): it may close the wrapper object.
            stripped = self._pending.rstrip()
            cut = len(stripped) - 1 if self._wrapped and stripped.endswith("}") else len(stripped)
            send, self._pending = self._pending[:cut], self._pending[cut:]
            if flush:
                send, self._pending = send + self._pending, ""
        if send:
            self._sent_any = True
            events.append(ToolCallDelta(self._index, send))
        if final:
            events.append(ToolCallEnd(self._index))
        return events


def new_call_prefix() -> str:
    """A random tool-call id prefix, unique in practice (48 random bits)."""
    return f"call_{secrets.token_hex(6)}"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could begin `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
