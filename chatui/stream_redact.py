"""A model's streamed text with the keys taken out as it streams (`StreamRedactor`).

Apart from `chatui.redact` (text), which the session uses from the start:
only a turn needs the stream's events.
"""

from __future__ import annotations

from chatui.providers.base import StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from chatui.redact import Redactor

Channel = tuple[str, int]  # What a piece of streamed text belongs to: the answer, a call.


class StreamRedactor:
    """A model's streamed text, redacted: a key sent in pieces never shows, even in part.

    The model's text comes from the server, which can echo a key back (a
    proxy that quotes the request, say). Each piece is redacted on its way
    in; the end of what came so far is held back while it could still be
    the start of a key (`sk-pr` may go on `oj-…`), and goes out, masked or
    as it was, once it cannot. So a key's start never reaches the screen or
    the store. What is held back goes out before any other kind of event
    (so the reply's order stays), and with the reply's end; a stop drops it:
    it was never shown. With no keys, every event passes as it is.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor
        self._held: tuple[Channel, str, StreamEvent] | None = None

    def __call__(self, event: StreamEvent) -> list[StreamEvent]:
        """The events to apply and show for `event`, in order."""
        if not self._redact:
            return [event]
        channel = _channel(event)
        out = self.flush() if self._held is not None and self._held[0] != channel else []
        if channel is None:
            return [*out, event]
        text = (self._held[1] if self._held is not None else "") + _text_of(event)
        hold = self._redact.start_at_end(text)
        self._held = (channel, text[len(text) - hold :], event) if hold else None
        released = self._redact(text[: len(text) - hold])
        return [*out, _with_text(event, released)] if released else out

    def flush(self) -> list[StreamEvent]:
        """What is held back, as the event it came in (redacted: it may be a cut key)."""
        if self._held is None:
            return []
        _, text, event = self._held
        self._held = None
        return [_with_text(event, self._redact(text))]


def _channel(event: StreamEvent) -> Channel | None:
    match event:
        case TextDelta():
            return ("text", 0)
        case ThinkingDelta():
            return ("thinking", 0)
        case ToolCallDelta(index=index):
            return ("call", index)
    return None


def _text_of(event: StreamEvent) -> str:
    if isinstance(event, ToolCallDelta):
        return event.arguments
    return event.text if isinstance(event, TextDelta | ThinkingDelta) else ""


def _with_text(event: StreamEvent, text: str) -> StreamEvent:
    if isinstance(event, ToolCallDelta):
        return ToolCallDelta(event.index, text)
    return ThinkingDelta(text) if isinstance(event, ThinkingDelta) else TextDelta(text)
