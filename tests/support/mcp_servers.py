"""MCP servers the tests run as subprocesses: the SDK's own `MCPServer`, and raw JSON-RPC ones.

    python -m tests.support.mcp_servers KIND [--http PORT]

Run it from the repository root (a stdio server's `cwd`), so that
`tests.support` imports. With `CHATUI_TEST_RECORD=<file>` in its
environment, a server appends what it saw to that file, one JSON object a
line: `{"ev": ..., "tool": ..., "rid": ..., "t": time.time(), "pid": ...}`
(`rid`, the request's id, is always a string). Events:

- `start`: a tool's handler began (`tool`, `rid`);
- `handler_cancelled`: its handler saw the cancellation (`slow`, `stubborn`);
- `done`: its handler finished (its answer may still be dropped);
- `notif`: a notification came from the client (`method`, `params`: for
  `notifications/cancelled`, `params.requestId` is the cancelled call's id);
- `request` (raw kinds only): any request came (`method`, `rid`).

KIND `standard` is an `MCPServer` (the real SDK server) over stdio, or over
Streamable HTTP on 127.0.0.1:PORT (endpoint `/mcp`) with `--http PORT`. Its
tools:

- `slow(seconds)`: reports progress every 0.05 s until `seconds` have
  passed, then answers "slept"; records `handler_cancelled` if cancelled;
- `stubborn(seconds)`: shields its sleep from cancellation, then answers
  "late answer" (the SDK server drops the answer of a cancelled call);
- `echo(text)`: answers `text`;
- `change_tools(add=True)`: adds the tool `extra` (or removes it), then
  tells the client its tool list changed (`notifications/tools/list_changed`,
  and to 2026-era `subscriptions/listen` subscribers);
- `env()`: the names in its environment, sorted, one a line;
- `spawn_child(marker)`: starts `sleep MARKER` (chatui's grandchild, in the
  server's process group, holding its stdout and stderr); answers its pid.

The raw kinds speak JSON-RPC over stdio without the SDK (and start in a
few milliseconds). They answer `initialize` (the 2025 protocol), `ping`
and `tools/list` (two tools a page: `echo(text)`, `wait()` and `change()`,
which adds the tool `extra` and sends `notifications/tools/list_changed`),
and every other request with "method not found" (so a client's
`server/discover` probe falls back to `initialize`). Each request's method
and params go to stderr ("got METHOD PARAMS").

- `late`: `wait` is answered ("LATE", after a progress notification) only
  once the client's `notifications/cancelled` for it has come: a server that
  ignores the cancel and answers late;
- `crash`: `wait` records `start`, then the process exits with status 3;
- `garbage`: every `tools/call` is preceded by a line that is not JSON on
  stdout ("this is not json"); `wait` then answers "ok after garbage";
- `noinit`: never answers `initialize` (the rest as `late`);
- `deaf`: ignores SIGTERM, and goes on running once its stdin is closed;
- `chatty`: as `late`, but first writes `CHATTY_LINES` numbered lines
  ("chatter N éé…", 119 bytes each) to stderr;
- `babbler`: as `late`, but first writes `CHATTY_LINES` lines that are not
  JSON-RPC ("babble N") to stdout;
- `restless`: as `late`, but says its tool list changed each time it has
  sent the list's last page: a client that lists again at once never stops;
- `refuse`: refuses `initialize` with an error whose message holds line
  breaks, an escape sequence and markup (`REFUSAL`).

Each writes "KIND server started" to stderr as it starts.

KIND `lingering` serves Streamable HTTP only (`--http PORT`), without the
SDK: a server of the 2025 protocol that gives the client a session
(`Mcp-Session-Id`: "lingering-N" for its Nth `initialize`), answers
`initialize`, `ping`, `tools/list` (the raw tools) and `echo` (the text,
then the session's id in brackets), the rest with "method not found", and
never answers the `DELETE` that ends the session (it records `delete` when
one comes). A request whose `Authorization` header is not `LINGERING_TOKEN`
(none is fine) gets a 401 whose text body repeats the header.
"""

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

RECORD_ENV = "CHATUI_TEST_RECORD"
RAW_KINDS = (
    "late",
    "crash",
    "garbage",
    "noinit",
    "deaf",
    "chatty",
    "babbler",
    "restless",
    "refuse",
    "complain",
)
HTTP_KINDS = ("lingering",)
KINDS = ("standard", *RAW_KINDS, *HTTP_KINDS)
COMPLAINT = "boom: GITHUB_TOKEN is not set \x1b[31m[bold]see --help[/bold]"  # `complain`'s.
CHATTY_LINES = 25_000  # Lines `chatty` writes to stderr (3 MB), `babbler` to stdout.
LINGERING_TOKEN = "Bearer let-me-in"
REFUSAL = "no\n\x1b[31mway [b]bold[/b]\r\nlog: /somewhere/else.log"
PROGRESS_EVERY = 0.05  # Seconds between two progress reports of `slow`.
PAGE = 2  # Tools in one page of a raw server's tools/list.

_record_lock = threading.Lock()


def record(ev: str, **fields: Any) -> None:
    """Append one event to the record file (if the environment names one)."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps({"ev": ev, **fields, "t": time.time(), "pid": os.getpid()}, default=str)
    with _record_lock, open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


# The SDK server


def run_standard(http_port: int | None) -> None:
    import anyio
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.shared import jsonrpc_dispatcher

    dispatch = jsonrpc_dispatcher.JSONRPCDispatcher._dispatch_notification

    def recorded(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        record("notif", method=msg.method, params=msg.params)
        return dispatch(self, msg, *args, **kwargs)

    # Test only: every notification from the client is recorded as it comes.
    jsonrpc_dispatcher.JSONRPCDispatcher._dispatch_notification = recorded  # type: ignore[method-assign]

    server = MCPServer("chatui-test")

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Sleep for `seconds`, reporting progress; records a cancellation."""
        rid = str(ctx.request_id)
        record("start", tool="slow", rid=rid)
        steps = max(1, round(seconds / PROGRESS_EVERY))
        try:
            for step in range(steps):
                await ctx.report_progress(step, steps, f"step {step}")
                await anyio.sleep(PROGRESS_EVERY)
        except BaseException as error:
            record("handler_cancelled", tool="slow", rid=rid, exc=type(error).__name__)
            raise
        record("done", tool="slow", rid=rid)
        return "slept"

    @server.tool()
    async def stubborn(seconds: float, ctx: Context) -> str:
        """Sleep for `seconds` whatever happens, then answer."""
        rid = str(ctx.request_id)
        record("start", tool="stubborn", rid=rid)
        with anyio.CancelScope(shield=True):
            await anyio.sleep(seconds)
        record("done", tool="stubborn", rid=rid)
        return "late answer"

    @server.tool()
    async def echo(text: str, ctx: Context) -> str:
        """Answer `text`."""
        record("start", tool="echo", rid=str(ctx.request_id))
        return text

    def extra(x: int) -> int:
        """Add one to `x`."""
        return x + 1

    @server.tool()
    async def change_tools(ctx: Context, add: bool = True) -> str:
        """Add the tool `extra` (or remove it), and say that the tool list changed."""
        record("start", tool="change_tools", rid=str(ctx.request_id))
        if add:
            server.add_tool(extra, name="extra")
        else:
            server.remove_tool("extra")
        await ctx.session.send_tool_list_changed()
        await ctx.notify_tools_changed()
        return "added" if add else "removed"

    @server.tool()
    def env() -> str:
        """The names in this server's environment, sorted, one a line."""
        return "\n".join(sorted(os.environ))

    @server.tool()
    def spawn_child(marker: str) -> str:
        """Start `sleep MARKER` in this server's process group; answer its pid."""
        child = subprocess.Popen(["sleep", marker], stdin=subprocess.DEVNULL)
        record("start", tool="spawn_child", child=child.pid)
        return str(child.pid)

    print("standard server started", file=sys.stderr, flush=True)
    if http_port is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)


# The raw servers


class RawServer:
    """JSON-RPC over stdio without the SDK; `kind` says how it misbehaves."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lock = threading.Lock()
        self.waiting: dict[Any, Any] = {}  # Id of a `wait` call: its progress token.
        self.tools = list(RAW_TOOLS)

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
            sys.stdout.flush()

    def answer(self, rid: Any, result: dict[str, Any]) -> None:
        self.send({"id": rid, "result": result})

    def text(self, rid: Any, text: str) -> None:
        self.answer(rid, {"content": [{"type": "text", "text": text}], "isError": False})

    def serve(self) -> None:
        if self.kind == "chatty":
            for line in range(CHATTY_LINES):
                sys.stderr.buffer.write(f"chatter {line:09d} {'é' * 50}\n".encode())
            sys.stderr.flush()
        if self.kind == "babbler":
            with self.lock:
                for line in range(CHATTY_LINES):
                    sys.stdout.write(f"babble {line}\n")
                sys.stdout.flush()
        print(f"{self.kind} server started", file=sys.stderr, flush=True)
        if self.kind == "complain":  # A server missing what it needs says so, and exits.
            print(COMPLAINT, file=sys.stderr, flush=True)
            sys.exit(1)
        if self.kind == "deaf":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for line in sys.stdin:
            if line.strip():
                self.handle(json.loads(line))
        if self.kind == "deaf":
            record("stdin_closed")
            threading.Event().wait()

    def handle(self, message: dict[str, Any]) -> None:
        method, rid = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if rid is None:
            record("notif", method=method, params=params)
            if method == "notifications/cancelled":
                self.cancelled(params.get("requestId"))
            return
        record("request", method=method, rid=str(rid))
        print(f"got {method} {json.dumps(params)}", file=sys.stderr, flush=True)
        if method == "initialize" and self.kind == "refuse":
            self.send({"id": rid, "error": {"code": -32600, "message": REFUSAL}})
        elif method == "initialize":
            if self.kind != "noinit":
                version = params.get("protocolVersion", "2025-11-25")
                self.answer(
                    rid,
                    {
                        "protocolVersion": version,
                        "capabilities": {"tools": {"listChanged": True}},
                        "serverInfo": {"name": f"raw-{self.kind}", "version": "0"},
                    },
                )
        elif method == "ping":
            self.answer(rid, {})
        elif method == "tools/list":
            start = int(params.get("cursor") or 0)
            page: dict[str, Any] = {"tools": self.tools[start : start + PAGE]}
            if start + PAGE < len(self.tools):
                page["nextCursor"] = str(start + PAGE)
            self.answer(rid, page)
            if self.kind == "restless" and "nextCursor" not in page:
                self.send({"method": "notifications/tools/list_changed"})
        elif method == "tools/call":
            self.call(rid, params)
        else:
            self.send({"id": rid, "error": {"code": -32601, "message": f"no method {method}"}})

    def call(self, rid: Any, params: dict[str, Any]) -> None:
        name = params.get("name")
        record("start", tool=name, rid=str(rid))
        if self.kind == "garbage":
            with self.lock:
                sys.stdout.write("this is not json\n")
                sys.stdout.flush()
        if name == "echo":
            self.text(rid, str((params.get("arguments") or {}).get("text", "")))
        elif name == "change":
            self.tools.append({**RAW_TOOLS[0], "name": "extra"})
            self.send({"method": "notifications/tools/list_changed"})
            self.text(rid, "changed")
        elif name == "wait" and self.kind == "crash":
            os._exit(3)
        elif name == "wait" and self.kind == "garbage":
            self.text(rid, "ok after garbage")
        elif name == "wait":
            self.waiting[rid] = (params.get("_meta") or {}).get("progressToken")
        else:
            self.send({"id": rid, "error": {"code": -32602, "message": f"no tool {name}"}})

    def cancelled(self, rid: Any) -> None:
        """The client gave up on `rid`: answer it anyway, late, as a careless server does."""
        if rid not in self.waiting:
            return
        token = self.waiting.pop(rid)
        if token is not None:
            self.send(
                {
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": 1, "total": 2},
                }
            )
        self.text(rid, "LATE")
        record("done", tool="wait", rid=str(rid))


RAW_TOOLS = [
    {
        "name": "echo",
        "description": "Answer `text`.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "wait",
        "description": "Wait.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "change",
        "description": "Add the tool `extra`.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


# The raw HTTP server


def serve_lingering(port: int) -> None:
    """`lingering` (see the module docstring) on 127.0.0.1:`port`, endpoint `/mcp`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sessions = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            print(f"{self.command} {self.path}", file=sys.stderr, flush=True)

        def reply(
            self, status: int, message: dict[str, Any] | None = None, session: str = ""
        ) -> None:
            body = json.dumps({"jsonrpc": "2.0", **message}).encode() if message else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if session:
                self.send_header("Mcp-Session-Id", session)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # No stream for the server's own messages.
            self.reply(405)

        def do_DELETE(self) -> None:
            record("delete")
            threading.Event().wait()  # Never answered.

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            message = json.loads(self.rfile.read(size))
            authorization = self.headers.get("Authorization")
            if authorization is not None and authorization != LINGERING_TOKEN:
                body = f"Who are you? You sent Authorization: {authorization}".encode()
                self.send_response(401)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            method, rid = message.get("method"), message.get("id")
            if rid is None:
                record("notif", method=method, params=message.get("params") or {})
                self.reply(202)
                return
            record("request", method=method, rid=str(rid))
            if method == "initialize":
                result = {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "lingering", "version": "0"},
                }
                self.reply(200, {"id": rid, "result": result}, f"lingering-{next(sessions)}")
            elif method == "ping":
                self.reply(200, {"id": rid, "result": {}})
            elif method == "tools/list":
                self.reply(200, {"id": rid, "result": {"tools": RAW_TOOLS}})
            elif method == "tools/call" and message["params"].get("name") == "echo":
                text = (
                    f"{message['params']['arguments']['text']} ({self.headers['Mcp-Session-Id']})"
                )
                content = [{"type": "text", "text": text}]
                self.reply(200, {"id": rid, "result": {"content": content, "isError": False}})
            else:
                error = {"code": -32601, "message": f"no method {method}"}
                self.reply(200, {"id": rid, "error": error})

    ThreadingHTTPServer.daemon_threads = True
    print("lingering server started", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.mcp_servers")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve over Streamable HTTP")
    args = parser.parse_args(argv)
    if args.kind == "standard":
        run_standard(args.http)
    elif args.kind in HTTP_KINDS:
        if args.http is None:
            parser.error(f"{args.kind} speaks Streamable HTTP only")
        serve_lingering(args.http)
    elif args.http is not None:
        parser.error("the raw kinds speak stdio only")
    else:
        RawServer(args.kind).serve()


if __name__ == "__main__":
    main()
