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
- A name, once given, is that tool's for good (`ToolNames`, kept by the
  manager for all its servers): an approval "for the conversation" is
  remembered by name, and the model reads its earlier calls by name, so a
  name must never pass to another tool (one added later whose name reads
  the same once made safe, or another server's while the first is away).
- How many. A request takes at most `TOOL_LIMIT` tools (OpenAI refuses
  more), and each schema checked costs a millisecond or more on the event
  loop, and is sent with every request: so a server's first `TOOL_LIMIT`
  tools, a schema of at most `SCHEMA_LIMIT` characters each and
  `SCHEMA_BUDGET` in all, are offered; the log says how many were not.
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
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import mcp_types as mt

from chatui import redact
from chatui.config import ToolsConfig
from chatui.mcp.results import tool_output
from chatui.mcp.schema import BadSchema, ToolSchema
from chatui.mcp.server import McpCallError, McpServer
from chatui.providers.base import ToolSpec
from chatui.tools.protocol import ToolProgress
from chatui.tools.registry import TOOL_LIMIT, CallContext, ToolOutput

NAME_LIMIT = 64  # Characters of a tool name, for both APIs.
DESCRIPTION_LIMIT = 1024  # Characters of a tool's description: OpenAI refuses more.
PROGRESS_MESSAGE_LIMIT = 500  # Characters of a progress message handed on.
PROGRESS_BACKLOG = 100  # Progress reports waiting for the turn's task; older ones dropped.
DEFAULT_OUTPUT_LIMIT = ToolsConfig().output_limit
SCHEMA_LIMIT = 64_000  # Characters of one tool's input schema, as JSON (about 16k tokens).
SCHEMA_BUDGET = 512_000  # Characters of all of one server's input schemas offered.
NAMES_LIMIT = 10_000  # Names `ToolNames` remembers; past that the oldest not in use go.
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
        except BaseException:  # A stop, or a report that failed: the call ends here too.
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
    names: ToolNames | None = None,
) -> list[McpTool]:
    """`listing`'s usable tools as registry tools, named apart from `taken` and each other.

    `names`: the names given so far, which keep each tool's name its own
    (see the module's docstring); without it, a listing is named on its own.
    """
    usable: list[tuple[mt.Tool, ToolSchema]] = []
    seen: set[str] = set()
    budget, left_out = SCHEMA_BUDGET, 0
    for tool in listing:
        if tool.name in seen:
            server.log.line(f"The tool {tool.name!r} was listed twice; the first one is used.")
            continue
        seen.add(tool.name)
        if len(usable) == TOOL_LIMIT:
            left_out += 1
            continue
        size = _json_size(tool.input_schema)
        try:
            if size == 0:
                raise BadSchema("its input schema cannot be written as JSON")
            if size > SCHEMA_LIMIT:
                raise BadSchema(f"its input schema is over {SCHEMA_LIMIT:,} characters")
            if size > budget:
                left_out += 1
                continue
            usable.append((tool, ToolSchema.load(tool.input_schema)))
            budget -= size
        except BadSchema as problem:
            server.log.line(f"The tool {tool.name!r} was left out: {problem}.")
    if left_out:
        server.log.line(
            f"{left_out:,} tools were left out: chatui offers at most {TOOL_LIMIT} tools of a "
            f"server, with {SCHEMA_BUDGET:,} characters of input schemas in all."
        )
    given = api_names(server.name, [tool.name for tool, _ in usable], taken, names)
    return [
        McpTool(server, tool, given[tool.name], schema, output_limit=output_limit)
        for tool, schema in usable
    ]


class ToolNames:
    """The API names given to MCP tools, each to one tool of one server for good.

    Past `limit` names (a server that renames its tools at each listing),
    the oldest not in use are forgotten.
    """

    def __init__(self, limit: int = NAMES_LIMIT) -> None:
        self.limit = limit
        self._owners: dict[str, tuple[str, str]] = {}  # A name: its (server, tool).
        self._names: dict[tuple[str, str], str] = {}

    def of(self, server: str, tool: str) -> str | None:
        """The name given to `server`'s `tool`, if any."""
        return self._names.get((server, tool))

    def free(self, name: str, server: str, tool: str) -> bool:
        """Whether `name` may be `server`'s `tool`'s: given to no other tool."""
        return self._owners.get(name, (server, tool)) == (server, tool)

    def give(self, name: str, server: str, tool: str, in_use: set[str]) -> None:
        """Make `name` `server`'s `tool`'s; `in_use`: names never to forget now."""
        before = self._names.get((server, tool))
        if before is not None and before != name:
            del self._owners[before]
        self._owners[name] = (server, tool)
        self._names[(server, tool)] = name
        if (excess := len(self._owners) - self.limit) > 0:
            for old in [n for n in self._owners if n not in in_use][:excess]:
                del self._names[self._owners.pop(old)]


def api_names(
    server: str, tools: Iterable[str], taken: set[str], names: ToolNames | None = None
) -> dict[str, str]:
    """Each of `server`'s `tools` (own names) by the name the APIs are given for it.

    A tool named before (in `names`) keeps its name; the others are named as
    the module's docstring says, never with a name given to another tool.
    """
    book = names if names is not None else ToolNames()
    used = set(taken)
    given: dict[str, str] = {}
    order = sorted(set(tools), key=lambda t: (_safe(server, t) != f"{server}__{t}", t))
    for tool in order:
        known = book.of(server, tool)
        if known is not None and known not in used:
            given[tool] = known
            used.add(known)
    for tool in order:
        if tool in given:
            continue

        def free(candidate: str, tool: str = tool) -> bool:
            return candidate not in used and book.free(candidate, server, tool)

        name = _safe(server, tool)
        if len(name) > NAME_LIMIT or not free(name):
            name = _hashed(name, server, tool, free)
        used.add(name)
        given[tool] = name
    for tool, name in given.items():
        book.give(name, server, tool, used)
    return given


def _safe(server: str, tool: str) -> str:
    return _UNSAFE.sub("_", f"{server}__{tool}")


def _hashed(name: str, server: str, tool: str, free: Callable[[str], bool]) -> str:
    """`name` cut, with 6 hex digits of a hash of (`server`, `tool`): the first that is `free`."""
    for attempt in itertools.count():
        salt = f"\0{attempt}" if attempt else ""
        digest = hashlib.sha256(f"{server}\0{tool}{salt}".encode()).hexdigest()[:6]
        candidate = f"{name[: NAME_LIMIT - 7]}_{digest}"
        if free(candidate):
            return candidate
    raise AssertionError("unreachable")


def _json_size(schema: object) -> int:
    """Characters of `schema` as JSON, as the APIs are sent it; 0 if it cannot be written."""
    try:
        return len(json.dumps(schema, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return 0


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
