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

MAX_LOG_BYTES = 1 << 20  # A log longer than this at a server's start is cut...
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

    def begin(self, what: str) -> None:
        """A new start of the server: the file is cut if it grew too long, and the start noted."""
        with self._lock:
            self._partial = ""
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.stat().st_size > MAX_LOG_BYTES:
                    tail = self.path.read_bytes()[-KEEP_LOG_BYTES:]
                    self.path.write_bytes(tail.partition(b"\n")[2])
        self.line(f"--- {what}")

    def line(self, text: str) -> None:
        """Append `text` (one or more lines), stamped, redacted and made visible."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        safe = visible(self.redact(text)).rstrip("\n")
        with self._lock:
            self._append(f"{stamp} {safe}\n")

    def stderr(self, data: str) -> None:
        """A piece of the server's stderr: whole lines go in, the rest waits for its end."""
        with self._lock:
            lines = (self._partial + data).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE:
                lines.append(self._partial)
                self._partial = ""
        for text in lines:
            self._stderr_line(text)

    def end_of_stderr(self) -> None:
        """The server's stderr closed: what is left of its last line goes in."""
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._stderr_line(rest)

    def _stderr_line(self, text: str) -> None:
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + f" [cut: {len(text)} characters]"
        safe = visible(self.redact(text.rstrip("\r")))
        with self._lock:
            self._append(f"stderr: {safe}\n")

    def _append(self, text: str) -> None:
        with contextlib.suppress(OSError):  # A full disk or a read-only dir loses the log only.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8", errors="replace") as file:
                file.write(text)


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
