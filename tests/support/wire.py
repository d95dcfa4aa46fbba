"""A loopback HTTP server that plays scripted server-sent-event replies, for tests.

The real `openai` and `anthropic` SDKs talk to it over a real socket on
127.0.0.1. It runs on a thread of its own with its own event loop, so a test's
loop can block, stall or be cancelled without touching it. For each request it
records the path, the headers, the JSON body, the client's address (one per
connection), and when the client disconnected, if it did before the reply
ended: the test's proof that a stop closed the stream for real.

A reply is a list of steps, played in order (`WireServer.play`):

- `Headers(status, headers)`: the status line and headers of an event stream;
  sent before the first `Send` if no step sends them;
- `Send(data, event)`: one SSE event (`data` a dict is sent as JSON);
- `Raw(bytes)`: bytes as they are, inside the chunked body (`sse(*lines)`
  makes one event from raw lines: a hostile server's fields, bytes that are
  not UTF-8);
- `Error(status, body, headers)`: a whole non-streaming JSON reply;
- `Gate(event)`: wait until the test sets a `threading.Event` (a stall the
  test ends), or until the client disconnects;
- `Sleep(seconds)`: pause, noticing a disconnect at once (for `bench/`'s paced
  streams; tests use `Gate`, never time);
- `STALL`: wait until the client disconnects;
- `DROP`: close the connection in the middle of the body;
- the end of the list: the body ends cleanly (the final empty chunk).

A `validate` function may refuse a request before its reply is played, the way
the real API would: it returns an error body, sent with status 400.

A GET (a client asking a server about itself, such as its models' context
windows) takes no scripted reply and is not among `requests`: it is answered
from `documents` (path → JSON body), else with a 404, and recorded in `gets`.
A document that is a `Gate` holds the GET until the test opens it (then a
404) or the client leaves: a server that does not answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Headers:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    data: dict[str, Any] | str
    event: str | None = None


@dataclass(frozen=True)
class Raw:
    data: bytes


@dataclass(frozen=True)
class Error:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Gate:
    opened: threading.Event


@dataclass(frozen=True)
class Sleep:
    seconds: float


STALL = "stall"
DROP = "drop"

Step = Headers | Send | Raw | Error | Gate | Sleep | str
Validator = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    refused: dict[str, Any] | None = None
    peer: Any = None  # The client's address: the same for requests on one connection.
    disconnected_at: float | None = None  # The client left before the reply ended.
    ended: threading.Event = field(default_factory=threading.Event)  # Reply over, either way.

    @property
    def disconnected(self) -> bool:
        return self.disconnected_at is not None


class WireServer:
    """Serve scripted replies on 127.0.0.1 at a free port; use as a context manager."""

    def __init__(self, validate: Validator | None = None) -> None:
        self.validate = validate
        self.requests: list[Recorded] = []
        self.documents: dict[str, Any] = {}  # What a GET of each path is answered with.
        self.gets: list[Recorded] = []
        self._replies: deque[list[Step]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._arrived = threading.Condition()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def play(self, *replies: list[Step]) -> None:
        """Queue replies: each request takes the next; with none left, a 500."""
        self._replies.extend(replies)

    def wait_for_request(self, count: int = 1, timeout: float = 10.0) -> Recorded:
        """Block until `count` requests have arrived; return the last of them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} requests arrived, not {count}")
            return self.requests[count - 1]

    def __enter__(self) -> WireServer:
        self._thread = threading.Thread(target=self._run, name="wire-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the wire server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # The client left, or the server is shutting down.
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and play its reply; False when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        request = Recorded(method, path, headers, body, time.monotonic())
        request.peer = writer.get_extra_info("peername")
        if method == "GET":
            self.gets.append(request)
            document = self.documents.get(path)
            if isinstance(document, Gate):
                await _Reply(request, reader, writer)._wait(document.opened)
                if request.disconnected:
                    return False
                document = None
            await _send_whole(
                writer, Error(404, "not found") if document is None else Error(200, document)
            )
            return True
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
        try:
            refused = self.validate(body) if self.validate and isinstance(body, dict) else None
            if refused is not None:
                request.refused = refused
                await _send_whole(writer, Error(400, refused))
                return True
            steps = self._replies.popleft() if self._replies else [Error(500, "no reply left")]
            return await _Reply(request, reader, writer).play(steps)
        finally:
            request.ended.set()


class _Reply:
    def __init__(
        self, request: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.request, self.reader, self.writer = request, reader, writer
        self.started = False

    async def play(self, steps: list[Step]) -> bool:
        try:
            for step in steps:
                if isinstance(step, Error):
                    await _send_whole(self.writer, step)
                    return True
                if isinstance(step, Headers):
                    await self._headers(step)
                elif isinstance(step, Send | Raw):
                    await self._headers(Headers())
                    await self._chunk(_event_bytes(step) if isinstance(step, Send) else step.data)
                elif isinstance(step, Gate | Sleep):
                    await self._wait(step.opened if isinstance(step, Gate) else step.seconds)
                    if self.request.disconnected:
                        return False
                elif step == STALL:
                    await self._wait(None)
                    return False
                elif step == DROP:
                    self.writer.transport.abort()
                    return False
            await self._headers(Headers())
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()
            return True
        except (ConnectionError, RuntimeError):
            self._left()
            return False

    async def _headers(self, step: Headers) -> None:
        if self.started:
            return
        self.started = True
        extra = "".join(f"{k}: {v}\r\n" for k, v in step.headers.items())
        self.writer.write(
            f"HTTP/1.1 {step.status} {_reason(step.status)}\r\n"
            "content-type: text/event-stream\r\ncache-control: no-cache\r\n"
            f"transfer-encoding: chunked\r\n{extra}\r\n".encode()
        )
        await self.writer.drain()

    async def _chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def _wait(self, until: threading.Event | float | None) -> None:
        """Until `until` is set or has passed (None: never), or the client disconnects."""
        gone = asyncio.ensure_future(self.reader.read(1))  # Done (b""): the client closed.
        if isinstance(until, threading.Event):
            while not gone.done() and not until.is_set():  # A test's gate: look every 2 ms.
                await asyncio.wait({gone}, timeout=0.002)
        else:
            await asyncio.wait({gone}, timeout=until)
        if gone.done():
            gone.exception()  # A reset is a disconnect too: retrieved, not raised.
            self._left()
        else:
            gone.cancel()

    def _left(self) -> None:
        if self.request.disconnected_at is None:
            self.request.disconnected_at = time.monotonic()


async def _send_whole(writer: asyncio.StreamWriter, error: Error) -> None:
    body = error.body if isinstance(error.body, str) else json.dumps(error.body)
    data = body.encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in error.headers.items())
    writer.write(
        f"HTTP/1.1 {error.status} {_reason(error.status)}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n".encode()
        + data
    )
    await writer.drain()


def sse(*lines: str | bytes) -> Raw:
    """One server-sent event written line by line, as is, then the blank line that ends it."""
    raw = [line if isinstance(line, bytes) else line.encode() for line in lines]
    return Raw(b"".join(line + b"\n" for line in raw) + b"\n")


def _event_bytes(step: Send) -> bytes:
    data = step.data if isinstance(step.data, str) else json.dumps(step.data)
    prefix = f"event: {step.event}\n" if step.event else ""
    return f"{prefix}data: {data}\n\n".encode()


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
