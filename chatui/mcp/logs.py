"""Where MCP servers' stderr and the SDK's own messages go: a file per server, never the terminal.

A server writes what it likes to stderr, and the `mcp` SDK logs at ERROR,
with tracebacks, whatever goes wrong on the wire (a line on stdout that is
not JSON-RPC, say). On the terminal either would draw over the TUI, so both
go to `LOG_DIR/NAME.log`: the server's stderr line by line, and every
record of the `mcp` logger (and chatui's own `chatui.mcp`) emitted in the
server's tasks, which carry its `ServerLog` in a context variable. A record
emitted elsewhere goes to `LOG_DIR/chatui.sdk.log`. Neither logger propagates, so
no record ever reaches a handler of the root logger, nor Python's
last-resort handler on stderr.

A log never grows past `MAX_LOG_BYTES`: when a write would take it past,
it is first cut to its last `KEEP_LOG_BYTES` (at a line's start), so a
server that floods its stderr costs a bounded file, and the latest lines,
the ones that say why it failed, are the ones kept.

Everything written is redacted of the keys the manager knows (the
providers', the header and environment values given to servers that look
like secrets) and has its control characters made visible: a server's text
is untrusted, and a log is read in a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from contextvars import ContextVar
from pathlib import Path

import platformdirs

from chatui.redact import NO_REDACTION, Redactor
from chatui.sanitize import visible

MAX_LOG_BYTES = 1 << 20  # A log that would grow longer than this is cut first...
KEEP_LOG_BYTES = 1 << 18  # ...to its last this many bytes.
MAX_LINE = 8192  # Characters of one stderr line kept (a longer one is cut, and says so).
LOGGERS = ("mcp", "chatui.mcp")  # The SDK's, and chatui's own for its servers.
FALLBACK_FILE = "chatui.sdk.log"  # Records from no server's task (a dot: no server's name).

logger = logging.getLogger("chatui.mcp")


def default_log_dir() -> Path:
    """`~/.local/state/chatui/log/mcp` on Linux: the platform's user log dir."""
    return Path(platformdirs.user_log_dir("chatui", appauthor=False)) / "mcp"


class ServerLog:
    """One server's log file: its stderr and the SDK's records about it, redacted, appended."""

    def __init__(self, path: Path, redactor: Redactor = NO_REDACTION) -> None:
        self.path = path
        self.redact = redactor
        self._lock = threading.Lock()
        self._partial = ""  # The start of a stderr line whose end has not come yet.
        self._size: int | None = None  # The file's size, as this log knows it (None: ask).

    def begin(self, what: str) -> None:
        """A new start of the server: the file is cut if it grew too long, and the start noted."""
        with self._lock:
            self._partial = ""
            self._size = None  # Another chatui may have written to it meanwhile.
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.stat().st_size > MAX_LOG_BYTES:
                    self._cut()
        self.line(f"--- {what}")

    def line(self, text: str) -> None:
        """Append `text` (one or more lines), stamped, redacted and made visible."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        safe = visible(self.redact(text)).rstrip("\n")
        with self._lock:
            self._append(f"{stamp} {safe}\n")

    def stderr(self, data: str) -> None:
        """A piece of the server's stderr: its whole lines go in, the rest waits for its end.

        One write for the piece, whatever its number of lines: a server
        that floods its stderr with short lines must not cost a file's
        opening each, on the event loop.
        """
        with self._lock:
            lines = (self._partial + data).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE:
                lines.append(self._partial)
                self._partial = ""
            if lines:
                self._append(self._stderr_lines(lines))

    def end_of_stderr(self) -> None:
        """The server's stderr closed: what is left of its last line goes in."""
        with self._lock:
            rest, self._partial = self._partial, ""
            if rest:
                self._append(self._stderr_lines([rest]))

    def _stderr_lines(self, lines: list[str]) -> str:
        """`lines` of stderr as the log has them: redacted, each cut short, made visible.

        Whole-text operations, no step a line: a flood of short lines is cheap.
        """
        text = self.redact("\n".join(lines))
        if max(map(len, lines)) > MAX_LINE:  # Redacted, a line is no longer than it was.
            text = "\n".join(map(_cut_line, text.split("\n")))
        text = visible(text.replace("\r\n", "\n").removesuffix("\r"))
        return "stderr: " + text.replace("\n", "\nstderr: ") + "\n"

    def _append(self, text: str) -> None:
        data = text.encode("utf-8", errors="replace")
        with contextlib.suppress(OSError):  # A full disk or a read-only dir loses the log only.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._size is None:
                self._size = self.path.stat().st_size if self.path.exists() else 0
            if self._size + len(data) > MAX_LOG_BYTES:
                self._cut()
            with self.path.open("ab") as file:
                file.write(data)
            self._size += len(data)

    def _cut(self) -> None:
        """Keep the file's last `KEEP_LOG_BYTES`, from a line's start (reads no more than that)."""
        with self.path.open("rb") as file:
            start = max(0, file.seek(0, 2) - KEEP_LOG_BYTES)
            file.seek(start)
            tail = file.read(KEEP_LOG_BYTES)
        kept = tail.partition(b"\n")[2] if start else tail
        self.path.write_bytes(kept)
        self._size = len(kept)


def _cut_line(line: str) -> str:
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]} [cut: {len(line)} characters]"


current_log: ContextVar[ServerLog | None] = ContextVar("chatui_mcp_log", default=None)
"""The log of the server whose task this is: set in its owner task and its calls' tasks."""


class _ServerLogHandler(logging.Handler):
    """Writes each record to the log of the server whose task emitted it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fallback: ServerLog | None = None
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        target = current_log.get() or self.fallback
        if target is None:
            return
        with contextlib.suppress(Exception):  # A record that cannot be formatted is lost.
            target.line(self.format(record))


_handler = _ServerLogHandler()


def route_sdk_logs(fallback: ServerLog) -> None:
    """Send the `mcp` and `chatui.mcp` loggers to the servers' logs, and nowhere else.

    Idempotent; the latest `fallback` takes the records of no server's task.
    """
    _handler.fallback = fallback
    for name in LOGGERS:
        each = logging.getLogger(name)
        each.propagate = False
        if _handler not in each.handlers:
            each.addHandler(_handler)
        if each.level == logging.NOTSET or each.level > logging.INFO:
            each.setLevel(logging.INFO)


def fallback_log(log_dir: Path, redactor: Redactor = NO_REDACTION) -> ServerLog:
    """`LOG_DIR/chatui.sdk.log`: what no server's task logged."""
    return ServerLog(log_dir / FALLBACK_FILE, redactor)
