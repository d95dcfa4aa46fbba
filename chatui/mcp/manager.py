"""Every MCP server of the config: started in the background, tools in the registry, closed.

The app makes one `McpManager` after its first frame (importing this
module, and so the `mcp` SDK, in a thread: it takes about a second) when
the config names enabled servers. `start()` starts each in the
background and returns at once: a turn that uses no MCP tool never waits
for one. Each time a server lists its tools, its group in the registry
(`mcp:NAME`) is replaced by them (`chatui.mcp.tools.tools_for` makes them
registry tools), so the next model request offers the new set; a failed
server's tools stay, so that the model's next call of one starts it again.

Listeners (`subscribe`) hear, on the event loop, each server's changes of
state (`StatusChanged`) and each stopped call whose cancellation went out
(`CancelSent`). `close()` closes every server within a deadline, then kills
every server process group left; `kill_now()` only kills, synchronously,
for a quit that cannot wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from chatui.config import McpConfig
from chatui.mcp import stdio
from chatui.mcp.events import CancelSent, McpEvent, StatusChanged
from chatui.mcp.logs import ServerLog, default_log_dir, fallback_log, route_sdk_logs
from chatui.mcp.server import McpCallError, McpServer
from chatui.mcp.status import ServerStatus
from chatui.mcp.tools import DEFAULT_OUTPUT_LIMIT, ToolNames, tools_for
from chatui.redact import Redactor
from chatui.tools.registry import ToolRegistry

__all__ = [
    "CancelSent",
    "McpCallError",
    "McpEvent",
    "McpManager",
    "McpServer",
    "StatusChanged",
]

CLOSE_TIMEOUT = 2.0  # Seconds `close()` waits for the servers by default.
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH", "CREDENTIAL")

logger = logging.getLogger("chatui.mcp")


class McpManager:
    """The config's MCP servers, by name (see the module docstring)."""

    def __init__(
        self,
        config: McpConfig,
        registry: ToolRegistry,
        *,
        log_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        """`secrets`: values never written to a log (the providers' keys, say).

        The header values, and the values of variables whose names look like
        a secret's, that the config gives its servers are added to them.
        `output_limit`: characters of a tool's result kept (`[tools] output_limit`).
        """
        self.registry = registry
        self.output_limit = output_limit
        self.log_dir = log_dir or default_log_dir()
        environ = os.environ if environ is None else environ
        redactor = Redactor([*secrets, *_config_secrets(config, environ)])
        route_sdk_logs(fallback_log(self.log_dir, redactor))
        self._listeners: list[Callable[[McpEvent], None]] = []
        self._groups: dict[str, list[str]] = {}  # A server's group: its tools' names there.
        self._names = ToolNames()  # Each name given, its tool's for good (across servers).
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False  # Closed for good: nothing starts a server again.
        self.servers: dict[str, McpServer] = {
            name: McpServer(
                server,
                ServerLog(self.log_dir / f"{name}.log", redactor),
                environ=environ,
                notify=self._notify,
                on_listing=self._listed,
            )
            for name, server in config.servers.items()
        }

    def start(self) -> None:
        """Start every enabled server in the background; returns at once."""
        for server in self.servers.values():
            server.start()

    def statuses(self) -> list[ServerStatus]:
        return [server.status for server in self.servers.values()]

    def restart(self, name: str) -> None:
        """Close `name` (if running) and start it again, in the background (not once closed)."""
        if self.closed:
            return
        task = asyncio.create_task(self.servers[name].restart())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def subscribe(self, listener: Callable[[McpEvent], None]) -> Callable[[], None]:
        """Call `listener` with each event, on the loop; returns what unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every server within `timeout` s; then kill every server process group left.

        Running calls are cancelled first (each sends its cancellation to its
        server). Whatever has not closed by the deadline is abandoned and killed.
        Nothing starts a server again afterwards: not a restart, not a call.
        """
        self.closed = True
        for server in self.servers.values():
            server.retire()
        for task in list(self._tasks):  # A restart under way starts nothing now.
            task.cancel()
        closing = [asyncio.create_task(server.close()) for server in self.servers.values()]
        try:
            if closing:
                await asyncio.wait(closing, timeout=timeout)
        finally:
            for task in closing:
                task.cancel()
            for server in self.servers.values():
                server.abandon()  # Whatever is still running is left behind...
            self.kill_now()  # ...and its processes killed.

    def kill_now(self) -> None:
        """SIGKILL every server process group, at once (a quit that cannot wait)."""
        stdio.kill_now()

    # What the servers say

    def _notify(self, event: McpEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # One listener's failure is not the others'.
                logger.exception("an MCP listener failed")

    def _listed(self, server: McpServer) -> None:
        """`server` listed its tools: they replace its group in the registry."""
        group = f"mcp:{server.name}"
        mine = set(self._groups.get(group, []))
        taken = {name for name in self.registry.names if name not in mine}
        try:
            tools = tools_for(
                server, server.listing, taken, output_limit=self.output_limit, names=self._names
            )
            self.registry.set_group(group, tools)
        except ValueError as error:
            server.log.line(f"its tools were not added: {error}")
            return
        self._groups[group] = [tool.name for tool in tools]


def _config_secrets(config: McpConfig, environ: Mapping[str, str]) -> list[str]:
    """What the config hands its servers that may be a secret.

    Header values, key-like variables, and the parts of a URL a key is put
    in: its password, its query's values, and its path's segments that look
    random (`https://host/mcp/KEY/sse`, as some services hand them out).
    """
    found: list[str] = []
    for server in config.servers.values():
        found += server.headers.values()
        found += [v for k, v in server.env.items() if _secret_name(k)]
        found += [environ[k] for k in server.env_inherit if k in environ and _secret_name(k)]
        found += _url_secrets(server.url)
    return [value for value in found if len(value) >= 8]


def _url_secrets(url: str) -> list[str]:
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = [parts.password or ""]
    found += [value for _, value in urllib.parse.parse_qsl(parts.query)]
    found += [part for part in parts.path.split("/") if _random_looking(part)]
    return found


def _random_looking(text: str) -> bool:
    """Whether `text` mixes two of lower case, upper case and digits, as a key does."""
    kinds = (str.islower, str.isupper, str.isdigit)
    return sum(any(kind(c) for c in text) for kind in kinds) >= 2


def _secret_name(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)
