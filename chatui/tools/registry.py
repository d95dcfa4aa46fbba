"""The tool registry: typed Python functions the model can call.

A `Tool` wraps a function, async or sync, with a docstring; its JSON schema
comes from its signature (`schema.describe`). `ToolRegistry.run()` carries
one call through: the arguments are parsed and validated, the user is asked
if the tool needs approval, then the function runs (a sync one on a daemon
thread of its own, off the event loop) under the tool's timeout. Whatever
goes wrong (arguments that are not JSON or break the schema, an unknown
tool, a denial, an exception, a timeout) becomes an error result that the
model sees; only a stop leaves `run()` as an exception.

"A stop" means one the user asked for: the turn's token was cancelled, or
the task running the call is being cancelled. A tool that raises
`SystemExit` or `KeyboardInterrupt` (a `sys.exit()` in it) does not end
chatui, and a `CancelledError` that comes out of the tool on its own (it
awaited a task that something else cancelled) is not a stop: both are error
results, and the turn goes on.

A running async tool is cancelled with its task; a sync one cannot be
interrupted, so its thread finishes on its own, or never, and its result is
dropped. Its thread is a daemon one, never waited for, so even a call that
never returns (`read` on a pipe nobody writes) cannot keep chatui from
quitting. The tools that can take long (the shell) are async.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatui.cancel import stop_requested, tried_to_exit
from chatui.messages import (
    ARGUMENT_DEPTH,
    Attachment,
    ToolCallPart,
    ToolResult,
    ToolResultState,
    nests_too_deep,
)
from chatui.providers.base import ToolSpec
from chatui.threads import in_daemon_thread
from chatui.tools.protocol import Approval, Approver, ToolProgress, ToolReport
from chatui.tools.schema import InvalidArguments, describe, parse_arguments, validate

DEFAULT_TIMEOUT = 30.0
TOOL_LIMIT = 128  # Tools offered in one request: OpenAI refuses a request with more.


class ToolFailed(Exception):
    """A tool's own clear refusal or failure; its message is the result, as it is."""


@dataclass(frozen=True)
class ToolOutput:
    """What a tool that says more than a value returns: text, state, attachments, structure.

    An MCP tool returns one (its `isError` is state "error"); the registry
    makes it the call's `ToolResult` as it is.
    """

    content: str
    state: ToolResultState = "ok"
    attachments: list[Attachment] = field(default_factory=list)
    structured: Any = None


@dataclass(frozen=True)
class CallContext:
    """What a running call may use besides its arguments: its id, and a way to report progress.

    `progress` is awaited in the turn's task (`ToolReport`), so it reports
    nothing once the turn is stopped.
    """

    call_id: str
    progress: Callable[[ToolProgress], Awaitable[None]]


class RunnableTool(Protocol):
    """A tool the registry can offer and run: a Python `Tool`, or an MCP server's tool.

    `check` validates the model's arguments (raising `InvalidArguments`) and
    returns them as the call takes them; `call` runs it, returning a value
    (made text) or a `ToolOutput`. Only a stop may leave `call` as a
    cancellation.
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_approval(self) -> bool: ...

    @property
    def timeout(self) -> float: ...

    @property
    def spec(self) -> ToolSpec: ...

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]: ...

    async def call(self, arguments: dict[str, Any], context: CallContext) -> Any: ...


@dataclass
class Tool:
    """A function the model may call, and how it is run."""

    function: Callable[..., Any]
    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    needs_approval: bool = False
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        description, parameters = describe(self.function)
        self.name = self.name or self.function.__name__
        self.description = self.description or description
        self.parameters = self.parameters or parameters
        if not self.description:
            raise TypeError(f"tool {self.name!r} needs a docstring: the model reads it")

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """`arguments` validated against the signature's schema, as Python values."""
        return validate(arguments, self.parameters)

    async def call(self, arguments: dict[str, Any], context: CallContext | None = None) -> Any:
        """Run the function with validated `arguments` (a sync one on a daemon thread)."""
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**arguments)
        return await in_daemon_thread(self.function, **arguments)


class ToolRegistry:
    """The tools offered to the model; a `ToolRunner` for the turn."""

    def __init__(self, tools: Iterable[RunnableTool] = ()) -> None:
        self._tools: dict[str, RunnableTool] = {}
        self._groups: dict[str, list[str]] = {}  # Group: the names of its tools.
        for tool in tools:
            self.add(tool)

    def add(self, tool: RunnableTool) -> RunnableTool:
        if tool.name in self._tools:
            raise ValueError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool
        return tool

    def set_group(self, group: str, tools: Iterable[RunnableTool]) -> None:
        """Make `tools` the whole of `group` (an MCP server's tools), replacing what it had.

        A name taken by a tool outside the group raises ValueError, and the
        group is left as it was. The next model request offers the new set.
        """
        tools = list(tools)
        before = self._groups.get(group, [])
        names = [tool.name for tool in tools]
        clash = [n for n in names if n in self._tools and n not in before]
        if clash or len(set(names)) != len(names):
            raise ValueError(f"two tools are named {(clash or names)[0]!r}")
        for name in before:
            del self._tools[name]
        for tool in tools:
            self._tools[tool.name] = tool
        self._groups[group] = names

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> RunnableTool:
        return self._tools[name]

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """The tools offered to the model: at most `TOOL_LIMIT`, the first in a fixed order.

        Past the limit OpenAI refuses every request, so the tools outside any
        group (the built-ins) come first, then each group's in the order of
        the groups' names, whatever order they were listed in.
        """
        grouped = {name for names in self._groups.values() for name in names}
        tools = [tool for name, tool in self._tools.items() if name not in grouped]
        for group in sorted(self._groups):
            tools += [self._tools[name] for name in self._groups[group]]
        return [tool.spec for tool in tools[:TOOL_LIMIT]]

    def needs_approval(self, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.needs_approval

    async def run(self, call: ToolCallPart, approve: Approver, report: ToolReport) -> ToolResult:
        """Validate, ask if need be, then run `call`; every failure is an error result."""
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return _error(call, f"There is no tool named {call.name!r} (the tools: {known}).")
        try:
            if nests_too_deep(call.arguments):  # Parsed, they would exhaust Python's stack.
                raise InvalidArguments(f"they nest more than {ARGUMENT_DEPTH} levels deep")
            arguments = tool.check(parse_arguments(call.arguments))
        except InvalidArguments as problem:
            return _error(call, f"Invalid arguments for {tool.name}: {problem}. Nothing was run.")
        if tool.needs_approval:
            await report("approval")
            if await approve(call) is Approval.DENY:
                return ToolResult(call.id, call.name, "The user denied this tool call.", "denied")
        await report("running")

        async def progress(update: ToolProgress) -> None:
            await report("running", update)

        try:
            async with asyncio.timeout(tool.timeout):
                value = await tool.call(arguments, CallContext(call.id, progress))
        except TimeoutError:
            return _error(call, f"{tool.name} did not finish within {tool.timeout:g} s.")
        except ToolFailed as failure:
            return _error(call, str(failure))
        except Exception as error:
            return _error(call, f"{tool.name} failed: {type(error).__name__}: {error}")
        except asyncio.CancelledError:
            if stop_requested():
                raise
            return _error(call, cancelled_on_its_own(tool.name))
        except BaseException as error:  # SystemExit, KeyboardInterrupt: from the tool itself.
            return _error(call, tried_to_exit(tool.name, error))
        if isinstance(value, ToolOutput):
            return ToolResult(
                call.id,
                call.name,
                value.content,
                value.state,
                attachments=value.attachments,
                structured=value.structured,
            )
        return ToolResult(call.id, call.name, _as_text(value))


def cancelled_on_its_own(name: str) -> str:
    """The result of a call cancelled by something other than the user."""
    return (
        f"{name} was cancelled by something other than the user (work it waited for was "
        "cancelled), so it gave no result."
    )


def _error(call: ToolCallPart, message: str) -> ToolResult:
    return ToolResult(call.id, call.name, message, "error")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
