"""Server-sent events read the way the spec says, from a body an SDK opened.

Both SDKs decode the event stream themselves, and both differ from the spec
(WHATWG HTML, "Interpreting an event stream") where real servers go:

- A block of fields without a `data:` line (a stream that opens with
  `retry: 3000` and a blank line, or an `id:` alone) dispatches nothing in
  the spec; the openai SDK dispatches an event with empty data and fails to
  parse it as JSON, which ends the reply.
- The spec decodes the stream as UTF-8 with replacement characters; both
  SDKs decode each line strictly, and one byte that is not UTF-8 ends the
  reply with a `UnicodeDecodeError`.

So the providers read the body of the response the SDK's `create()` opened
(the SDK stream's public `response`) with `events` below, and leave the
request, its status errors and its closing to the SDK. A body is drained
for a moment after its last event (`drain`), so that its HTTP/1.1
connection serves the next request, as the SDKs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

DRAIN_SECONDS = 0.1  # The most `drain` waits for the rest of a body (the openai SDK's figure).
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type (`message` unless the stream named one) and data."""

    name: str
    data: str


def _nothing() -> None:
    """Nobody to tell."""


async def events(
    body: AsyncIterator[bytes], on_invalid_utf8: Callable[[], None] = _nothing
) -> AsyncGenerator[Event, None]:
    """The events in `body`, a response's bytes.

    Bytes that are not UTF-8 become U+FFFD, and `on_invalid_utf8()` is called
    once, the first time. An event the body ends in the middle of is dropped.
    """
    lines, told, first = _Lines(), False, True
    name, data = "", list[str]()
    async for chunk in body:
        for raw in lines.feed(chunk):
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                line = raw.decode(errors="replace")
                if not told:
                    told = True
                    on_invalid_utf8()
            if first:
                line, first = line.removeprefix("\ufeff"), False
            if not line:  # The blank line: dispatch, if there is data.
                if data:
                    yield Event(name or "message", "\n".join(data))
                name, data = "", []
                continue
            if line.startswith(":"):  # A comment (a keep-alive, often).
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            # `id` and `retry` serve reconnecting, which no request here does; others are unknown.


async def drain(body: AsyncIterator[bytes], seconds: float = DRAIN_SECONDS) -> None:
    """Read what is left of `body` after its last event, for at most `seconds`.

    A body read to its end gives its connection back for the next request;
    one left unread is closed with it. Nothing read here matters, and no
    failure here can undo the reply that came before.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for _ in body:
                pass


class _Lines:
    """Splits bytes into lines at CRLF, LF or CR, across the chunks they arrive in."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # The start of a line whose end has not come.
        self._after_cr = False  # The last chunk ended in CR: an LF next belongs to it.

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = False
        if not chunk:
            return []
        self._after_cr = chunk.endswith(b"\r")
        if _LINE_END.search(chunk) is None:
            self._pending.append(chunk)
            return []
        lines = _LINE_END.split(chunk)
        lines[0] = b"".join([*self._pending, lines[0]])
        rest = lines.pop()
        self._pending = [rest] if rest else []
        return lines
