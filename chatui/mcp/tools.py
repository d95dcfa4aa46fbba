"""An MCP server's tools as registry tools (`McpTool`): named for the APIs, checked, called.

Each time a server lists its tools, the manager calls `tools_for` and puts
the result in the registry as the server's group; the next model request
offers them.

- Names. Both APIs take tool names matching `^[a-zA-Z0-9_-]{1,64}$`; an
  MCP tool's may be 128 characters with dots and slashes. A tool is offered
  as `SERVER__TOOL`, every other character made `_`. A name too long, or
  taken (by a built-in, another server's tool, or another tool of this
  server that reads the same once made safe), is cut and given `_` and 6
  hex digits of a hash of the server's and the tool's own names. A tool
  whose name needed no change keeps it before one that did, and the rest
  go in order of their names, so a listing gives the same names each time,
  whatever its order. Each `McpTool` keeps its server and its own name.
- The spec: the description as given (the model reads it; it is untrusted
  text like any other, shown literally), cut to `DESCRIPTION_LIMIT`
  characters, the most OpenAI takes; the input schema passed through as the
  parameters (`chatui.mcp.schema`). A tool whose schema cannot be used is
  left out, and its server's log says why.
- Approval: the server's config (`ask`, `ask_tools`), true by default; the
  timeout: the server's `timeout`, applied by the registry to the whole call.
- The call runs in a task of its own while the turn's task waits for it
  and, meanwhile, hands on its progress: the SDK's progress callback runs
  outside the turn's task, but `CallContext.progress` must be awaited in it
  (so that a stop also stops the reports). Nothing is handed on once the
  call has ended or been stopped. A stop cancels the call's task, which
  makes the server send the cancellation, and is re-raised at once (the
  registry makes it "cancelled by the user"); a failed call is an error
  result with the server's sentence; a result becomes a `ToolOutput`
  (`chatui.mcp.results`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections import deque
from collections.abc import Iterable
from typing import Any

import mcp_types as mt

from chatui import redact
from chatui.config import ToolsConfig
from chatui.mcp.results import tool_output
from chatui.mcp.schema import BadSchema, ToolSchema
from chatui.mcp.server import McpCallError, McpServer
from chatui.providers.base import ToolSpec
from chatui.tools.protocol import ToolProgress
from chatui.tools.registry import CallContext, ToolOutput

NAME_LIMIT = 64  # Characters of a tool name, for both APIs.
DESCRIPTION_LIMIT = 1024  # Characters of a tool's description: OpenAI refuses more.
PROGRESS_MESSAGE_LIMIT = 500  # Characters of a progress message handed on.
PROGRESS_BACKLOG = 100  # Progress reports waiting for the turn's task; older ones dropped.
DEFAULT_OUTPUT_LIMIT = ToolsConfig().output_limit
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


class McpTool:
    """One tool of an MCP server, as the registry runs it (a `RunnableTool`)."""

    def __init__(
        self,
        server: McpServer,
        tool: mt.Tool,
        name: str,
        schema: ToolSchema,
        *,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        self.server = server
        self.name = name
        self.server_name = server.name
        self.tool_name = tool.name  # The server's own name for it, used in the call.
        self.schema = schema
        self.output_limit = output_limit
        description = tool.description or tool.title or ""
        description = description or f"The tool {tool.name} of the MCP server {server.name}."
        if len(description) > DESCRIPTION_LIMIT:
            description = f"{description[: DESCRIPTION_LIMIT - 1]}…"
        self.spec = ToolSpec(name, description, schema.parameters)

    def __repr__(self) -> str:
        return f"McpTool({self.name!r}: {self.tool_name!r} of {self.server_name!r})"

    @property
    def needs_approval(self) -> bool:
        return self.server.config.asks(self.tool_name)

    @property
    def timeout(self) -> float:
        return self.server.config.timeout

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """`arguments` as the model wrote them, if they fit the tool's schema."""
        return self.schema.check(arguments)

    async def call(self, arguments: dict[str, Any], context: CallContext) -> ToolOutput:
        """Call the tool on its server, handing its progress on (see the module docstring)."""
        waiting: deque[ToolProgress] = deque(maxlen=PROGRESS_BACKLOG)
        wake = asyncio.Event()
        stopped = [False]

        def on_progress(update: ToolProgress) -> None:
            if not (stopped[0] or call.done()):
                waiting.append(update)
                wake.set()

        call = asyncio.create_task(
            self.server.call(
                self.tool_name, arguments, call_id=context.call_id, on_progress=on_progress
            ),
            name=f"mcp call {context.call_id}",
        )
        call.add_done_callback(lambda _: wake.set())
        try:
            while not call.done():
                await wake.wait()
                wake.clear()
                while waiting and not call.done():
                    await context.progress(_shown(waiting.popleft()))
        except asyncio.CancelledError:
            stopped[0] = True
            call.cancel()  # The server is told; the stop never waits for that.
            call.add_done_callback(_retrieved)
            raise
        finally:
            waiting.clear()
        if call.cancelled():  # Not by this task: something closed the server.
            return ToolOutput(
                f"The MCP server {self.server_name} stopped the call before it finished.",
                "error",
            )
        try:
            result = call.result()
        except McpCallError as error:
            return ToolOutput(str(error), "error")
        return tool_output(result, limit=self.output_limit)


def tools_for(
    server: McpServer,
    listing: list[mt.Tool],
    taken: set[str],
    *,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
) -> list[McpTool]:
    """`listing`'s usable tools as registry tools, named apart from `taken` and each other."""
    usable: list[tuple[mt.Tool, ToolSchema]] = []
    seen: set[str] = set()
    for tool in listing:
        if tool.name in seen:
            server.log.line(f"The tool {tool.name!r} was listed twice; the first one is used.")
            continue
        seen.add(tool.name)
        try:
            usable.append((tool, ToolSchema.load(tool.input_schema)))
        except BadSchema as problem:
            server.log.line(f"The tool {tool.name!r} was left out: {problem}.")
    names = api_names(server.name, [tool.name for tool, _ in usable], taken)
    return [
        McpTool(server, tool, names[tool.name], schema, output_limit=output_limit)
        for tool, schema in usable
    ]


def api_names(server: str, tools: Iterable[str], taken: set[str]) -> dict[str, str]:
    """Each of `server`'s `tools` (own names) by the name the APIs are given for it."""
    used = set(taken)
    names: dict[str, str] = {}
    for tool in sorted(set(tools), key=lambda t: (_safe(server, t) != f"{server}__{t}", t)):
        name = _safe(server, tool)
        if len(name) > NAME_LIMIT or name in used:
            name = _hashed(name, server, tool, used)
        used.add(name)
        names[tool] = name
    return names


def _safe(server: str, tool: str) -> str:
    return _UNSAFE.sub("_", f"{server}__{tool}")


def _hashed(name: str, server: str, tool: str, used: set[str]) -> str:
    """`name` cut, with 6 hex digits of a hash of (`server`, `tool`): the first not in `used`."""
    for attempt in itertools.count():
        salt = f"\0{attempt}" if attempt else ""
        digest = hashlib.sha256(f"{server}\0{tool}{salt}".encode()).hexdigest()[:6]
        candidate = f"{name[: NAME_LIMIT - 7]}_{digest}"
        if candidate not in used:
            return candidate
    raise AssertionError("unreachable")


def _shown(update: ToolProgress) -> ToolProgress:
    """A progress report as handed on: its message masked of keys, then cut."""
    message = update.message
    if message is not None:
        limit = PROGRESS_MESSAGE_LIMIT
        message = redact.clip(message[: limit + redact.margin()], limit)[0]
    return ToolProgress(update.done, update.total, message)


def _retrieved(call: asyncio.Task[Any]) -> None:
    """Take a stopped call's outcome, so that an error after the stop is logged as nobody's."""
    if not call.cancelled():
        call.exception()
