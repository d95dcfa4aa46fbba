"""chatui's stdio transport for MCP servers: a process group of its own, killed whole on close.

The SDK's `stdio_client` hides the server's pid, merges a fixed list of
variables into its environment, and signals the server's process group
only if the server outlives a 2 s grace: a server that exits on EOF at once
leaves its own children running. So chatui runs its servers itself, as an
`mcp.client.Transport` (an async context manager giving the session its
two streams):

- the server starts in a new session (its pid is its process group's id),
  in its `cwd`, with an environment made of a few harmless variables
  (`SAFE_VARIABLES`, `LC_*`), then the names in `env_inherit` taken from
  chatui's environment, then `env`: an API key in chatui's environment
  reaches a server only if its config names it;
- its stdout is read line by line as JSON-RPC; a line that is not is written
  to the server's log (the first few of a chunk, then their number) and
  skipped; its stderr goes to the log too. Both are handled a small chunk
  at a time, the loop given back between two: a server flooding either
  never holds up the app;
- when the server exits, its group is killed (what it left behind goes with
  it) and the session sees the connection end, so the calls it was running
  fail at once; `returncode` says how it ended;
- on close: stdin is closed, the server gets `CLOSE_GRACE` seconds to exit,
  then the group gets SIGTERM and `TERM_GRACE` seconds, then SIGKILL, always,
  even if the server has exited (its children may not have). A close that is
  cancelled skips the waits, never the kill.

A process that the server moves out of its group (`setsid`, a daemon's
double fork) is beyond these kills: unlike the shell tool's commands
(`chatui.tools.reaper`), a server runs without a supervisor that could
follow it.

Every live group is in a module registry, so that `kill_now()` (a quit that
cannot wait: a second Ctrl+Q, the exit deadline, the interpreter's exit)
kills them all synchronously.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import json
import logging
import os
import re
import signal
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from chatui.config import McpServerConfig
from chatui.mcp.logs import ServerLog
from chatui.sanitize import one_line

SAFE_VARIABLES = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TMPDIR")
CLOSE_GRACE = 1.0  # Seconds a server has to exit once its stdin is closed...
TERM_GRACE = 0.5  # ...and then once its group got SIGTERM, before SIGKILL.
REAP_WAIT = 0.5  # Seconds to wait for the killed server's exit to be seen.
ENDING_WAIT = 2.0  # Seconds, once its output closed, to learn how the server ended.
STDERR_TAIL = 4096  # Characters of its stderr kept for its last words.
LAST_WORDS = 300  # Characters of its last stderr line in the sentence of how it ended.
EOF_WAIT = 0.5  # Seconds, past the server's exit, for the rest of its stdout.
MAX_MESSAGE = 64 << 20  # Bytes of one stdout line; a longer line is dropped.
CHUNK = 1 << 16
STDOUT_CHUNK = 1 << 14  # Bytes of stdout read (and their whole lines handled) in one step...
STDERR_CHUNK = 1 << 14  # ...and of stderr logged: a flood never holds the loop for long.
NOT_JSON_RPC = "a line on stdout that is not JSON-RPC, skipped"
NOT_JSON_RPC_KEPT = 2000  # Characters of such a line kept in the log...
NOT_JSON_RPC_SHOWN = 20  # ...and lines of a chunk kept, the rest counted.

logger = logging.getLogger("chatui.mcp")

_live_groups: set[int] = set()


def kill_now() -> None:
    """SIGKILL every server process group still alive, at once, synchronously."""
    while _live_groups:
        _kill_group(_live_groups.pop(), signal.SIGKILL)


atexit.register(kill_now)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def server_environment(config: McpServerConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """A stdio server's environment: harmless variables, then `env_inherit`'s, then `env`."""
    env = {
        name: value
        for name, value in environ.items()
        if (name in SAFE_VARIABLES or name.startswith("LC_")) and not value.startswith("()")
    }
    env.update({name: environ[name] for name in config.env_inherit if name in environ})
    env.update(config.env)
    return env


class StartError(Exception):
    """The server's program could not be run; str() is a sentence for the user."""


class _ServerProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a subprocess with pipes, which also says when the process exited.

    `Process.wait()` waits for the pipes to close too, which a child of the
    server holding them may never let happen.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=CHUNK, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]


class StdioTransport:
    """One run of a stdio server, an `mcp.client.Transport` (see the module docstring)."""

    def __init__(
        self, config: McpServerConfig, log: ServerLog, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.log = log
        self.environ = os.environ if environ is None else environ
        self.pid: int | None = None
        self.returncode: int | None = None
        self.lost = asyncio.Event()  # The server exited, or its stdout or stdin closed.
        self._process: asyncio.subprocess.Process | None = None
        self._protocol: _ServerProtocol | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stdout_done = asyncio.Event()
        self._stderr_done = asyncio.Event()
        self._stderr_tail = ""  # The end of what it wrote to stderr: its last words.
        self._to_session: MemoryObjectSendStream[SessionMessage | Exception] | None = None
        self._streams: list[
            MemoryObjectSendStream[SessionMessage | Exception]
            | MemoryObjectReceiveStream[SessionMessage | Exception]
            | MemoryObjectSendStream[SessionMessage]
            | MemoryObjectReceiveStream[SessionMessage]
        ] = []

    @property
    def ended(self) -> str:
        """How the server ended, as a sentence ("It exited with code 3.")."""
        code = self.returncode
        if code is None:
            return "It closed its output."
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"It was killed by {signal.Signals(-code).name}."
            return f"It was killed by signal {-code}."
        return f"It exited with code {code}."

    @property
    def ended_saying(self) -> str:
        """How a server that gave up at its start ended, with its last words: the reason it
        gave ("GITHUB_TOKEN is not set") is what the user needs to act on."""
        return self.ended + self._last_words()

    def _last_words(self) -> str:
        """The last line it wrote to stderr, quoted (keys masked, controls visible), or ""."""
        lines = [line for line in self._stderr_tail.splitlines() if line.strip()]
        if not lines:
            return ""
        return f' Its last words: "{one_line(self.log.redact(lines[-1]), LAST_WORDS)}"'

    async def ending(self) -> str:
        """How the server ended, once its exit is seen (waiting `ENDING_WAIT` s at most)."""
        protocol, process = self._protocol, self._process
        if (
            protocol is not None
            and process is not None
            and await _within(protocol.exited, ENDING_WAIT)
        ):
            self.returncode = process.returncode
        return self.ended

    async def __aenter__(self) -> Streams:
        loop = asyncio.get_running_loop()
        config = self.config
        argv = [config.command, *config.args]
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ServerProtocol(loop),
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=server_environment(config, self.environ),
                cwd=config.cwd or None,
                start_new_session=True,
            )
        except OSError as error:
            raise StartError(_not_run(config, error)) from None
        self._transport, self._protocol = transport, protocol
        self._process = asyncio.subprocess.Process(transport, protocol, loop)
        self.pid = transport.get_pid()
        _live_groups.add(self.pid)
        self.log.line(f"started {config.command} (pid {self.pid})")
        to_session, from_server = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        to_server, from_session = anyio.create_memory_object_stream[SessionMessage](0)
        self._to_session = to_session
        self._streams = [to_session, from_server, to_server, from_session]
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._write_stdin(from_session)),
            asyncio.create_task(self._read_stderr()),
            asyncio.create_task(self._watch_exit()),
        ]
        return from_server, to_server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Bounded, so shielded: a start past its deadline still closes politely. A native
        # cancellation of the task (a quit past its grace) still gets through, and the kill.
        with anyio.CancelScope(shield=True):
            await self.close()

    async def close(self) -> None:
        """Stop the server politely, then kill its group whatever happened (bounded in time)."""
        process, protocol, pgid = self._process, self._protocol, self.pid
        if process is None or protocol is None or pgid is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            if not await _within(protocol.exited, CLOSE_GRACE):
                _kill_group(pgid, signal.SIGTERM)
                await _within(protocol.exited, TERM_GRACE)
        finally:
            _kill_group(pgid, signal.SIGKILL)  # Always: the server's children too.
            _live_groups.discard(pgid)
            for task in self._tasks:
                task.cancel()
            for stream in self._streams:
                stream.close()
        try:
            await _within(protocol.exited, REAP_WAIT)
        finally:
            if protocol.exited.is_set():
                self.returncode = process.returncode
            if self._transport is not None:
                self._transport.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _lose(self) -> None:
        """The server is gone: the session sees its connection end."""
        self.lost.set()
        if self._to_session is not None:
            self._to_session.close()

    async def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout, to_session = self._process.stdout, self._to_session
        assert to_session is not None
        pending: list[bytes] = []  # The start of a line whose end has not come yet.
        size = 0
        try:
            while chunk := await stdout.read(STDOUT_CHUNK):
                if b"\n" not in chunk:  # Joined once its end comes: a long line costs no more.
                    pending.append(chunk)
                    size += len(chunk)
                    if size > MAX_MESSAGE:
                        self.log.line(f"dropped a stdout line longer than {MAX_MESSAGE} bytes")
                        pending, size = [], 0
                    continue
                lines = b"".join([*pending, chunk]).split(b"\n")
                rest = lines.pop()
                pending, size = [rest], len(rest)
                skipped: list[bytes] = []
                for line in lines:
                    if (message := self._parse(line)) is not None:
                        await to_session.send(message)
                    elif line.strip():
                        skipped.append(line)
                if skipped:
                    self._skipped(skipped)
                await asyncio.sleep(0)  # A flood never holds the loop for more than a chunk.
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass  # The session is gone, or the pipe broke: the end either way.
        finally:
            self._stdout_done.set()
            self._lose()

    def _parse(self, line: bytes) -> SessionMessage | None:
        """The JSON-RPC message on `line`, if it is one."""
        if not line.lstrip().startswith(b"{"):  # What cannot be one is not parsed.
            return None
        text = line.decode("utf-8", errors="replace")  # A stray byte spoils no message.
        with contextlib.suppress(ValidationError, ValueError):
            return SessionMessage(
                mcp_types.jsonrpc_message_adapter.validate_json(text, by_name=False)
            )
        return _readable(text)

    def _skipped(self, lines: list[bytes]) -> None:
        """Log the lines of a chunk that are not messages: the first few, then how many more.

        Bounded, so that a server printing its own messages to stdout by
        mistake is seen in its log, and one flooding it costs little.
        """
        shown = [
            f"{NOT_JSON_RPC}: {line.decode('utf-8', errors='replace').strip()[:NOT_JSON_RPC_KEPT]}"
            for line in lines[:NOT_JSON_RPC_SHOWN]
        ]
        if len(lines) > NOT_JSON_RPC_SHOWN:
            shown.append(f"... and {len(lines) - NOT_JSON_RPC_SHOWN} more such lines, skipped")
        self.log.line("\n".join(shown))

    async def _write_stdin(self, from_session: MemoryObjectReceiveStream[SessionMessage]) -> None:
        assert self._process is not None and self._process.stdin is not None
        stdin = self._process.stdin
        try:
            async for message in from_session:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                stdin.write(data.encode() + b"\n")
                await stdin.drain()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            self._lose()  # The server stopped reading: calls waiting on it would wait forever.

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        stderr = self._process.stderr
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # Split characters.
        with contextlib.suppress(OSError):
            while chunk := await stderr.read(STDERR_CHUNK):
                self._heard(decoder.decode(chunk))
                await asyncio.sleep(0)  # A flood never holds the loop for more than a piece.
        self._heard(decoder.decode(b"", final=True))
        self.log.end_of_stderr()
        self._stderr_done.set()

    def _heard(self, text: str) -> None:
        self.log.stderr(text)
        self._stderr_tail = (self._stderr_tail + text)[-STDERR_TAIL:]

    async def _watch_exit(self) -> None:
        assert self._protocol is not None and self._process is not None and self.pid is not None
        await self._protocol.exited.wait()
        self.returncode = self._process.returncode
        self.log.line(f"server process ended: {self.ended}")
        # What the server left in its group goes with it, and so stops holding its stdout.
        _kill_group(self.pid, signal.SIGKILL)
        await _within(self._stdout_done, EOF_WAIT)
        await _within(self._stderr_done, EOF_WAIT)  # Its last words, for the reason.
        self._lose()


async def _within(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


def _not_run(config: McpServerConfig, error: OSError) -> str:
    command = repr(config.command)
    if isinstance(error, FileNotFoundError):
        if config.cwd and not os.path.isdir(config.cwd):
            return f"chatui could not start it: its directory {config.cwd!r} does not exist."
        return f"chatui could not start it: no program {command} was found (check PATH)."
    if isinstance(error, PermissionError):
        return f"chatui could not start it: {command} may not be run (permission denied)."
    reason = error.strerror or type(error).__name__
    return f"chatui could not start it: running {command} failed ({reason})."


def _readable(text: str) -> SessionMessage | None:
    """A message the SDK's parser refused, made one it takes, if it is JSON-RPC at all.

    Python's `json` reads what the SDK's does not: a lone surrogate escape
    (JavaScript's `JSON.stringify` writes a file name that is not UTF-8 so)
    becomes U+FFFD. An answer that still cannot be read fails its request
    at once, rather than leaving the call to wait for its timeout.
    """
    try:
        data = _without_surrogates(json.loads(text))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    with contextlib.suppress(ValidationError, ValueError, RecursionError):
        again = json.dumps(data, ensure_ascii=False)  # Read by the same parser, the same limits.
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(again, by_name=False))
    request_id = data.get("id")
    if not isinstance(request_id, int | str) or isinstance(request_id, bool):
        return None
    if "result" not in data and "error" not in data:
        return None  # A request of the server's, not an answer: nothing waits for it.
    unreadable = {"code": -32603, "message": "chatui could not read the server's answer."}
    with contextlib.suppress(ValidationError, ValueError):
        return SessionMessage(
            mcp_types.jsonrpc_message_adapter.validate_python(
                {"jsonrpc": "2.0", "id": request_id, "error": unreadable}
            )
        )
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value
