"""MCP servers for a test: their configs, an HTTP server process, and what they recorded.

- `stdio_config(name, kind, record)`: a `[mcp.servers.NAME]` config running
  `python -m tests.support.mcp_servers KIND` over stdio, recording to `record`.
- `http_server(kind, record)`: the server of `kind` over Streamable HTTP on
  127.0.0.1, a free port, in a process group of its own (killed when the
  context ends); `http_config(name, server)` is its config.
- `Record(path)`: what a server recorded (`events`, `find`), and `wait_for`
  / `until` (sync / async): poll until a condition on it holds, with a
  deadline.
- `McpRig`: an `McpManager` over a registry of its own, the events it told,
  and calls by server name, for tests of the lifecycle without the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatui.config import McpServerConfig
from tests.support.mcp_servers import RECORD_ENV

ROOT = Path(__file__).resolve().parent.parent.parent
START_DEADLINE = 30.0  # Seconds an SDK server may take to start here (its imports: ~1 s).


def stdio_config(name: str, kind: str, record: Path, **fields: Any) -> McpServerConfig:
    """A stdio server of `kind` (see `tests.support.mcp_servers`) recording to `record`."""
    env = {RECORD_ENV: str(record), **fields.pop("env", {})}
    return McpServerConfig(
        name=name,
        command=sys.executable,
        args=["-m", "tests.support.mcp_servers", kind],
        env=env,
        cwd=str(ROOT),
        **fields,
    )


@dataclass
class HttpServer:
    """A server process over Streamable HTTP on 127.0.0.1 (its pid is its process group's)."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def http_server(kind: str, record: Path, stderr: Path | None = None) -> Iterator[HttpServer]:
    """The server of `kind` over HTTP, accepting connections; its group killed at the end."""
    port = free_port()
    stderr = stderr or record.with_suffix(".stderr")
    env = {**os.environ, RECORD_ENV: str(record)}
    with stderr.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.mcp_servers", kind, "--http", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not _accepts(port):
            assert process.poll() is None, f"the HTTP server exited: {stderr.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.02)
        yield HttpServer(f"http://127.0.0.1:{port}/mcp", process, stderr)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def http_config(name: str, server: HttpServer, **fields: Any) -> McpServerConfig:
    return McpServerConfig(name=name, url=server.url, **fields)


class Record:
    """The JSON lines a test server appended to its record file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def find(self, ev: str, **fields: Any) -> list[dict[str, Any]]:
        """The events `ev` whose fields have the given values."""
        return [
            event
            for event in self.events()
            if event["ev"] == ev and all(event.get(k) == v for k, v in fields.items())
        ]

    def cancelled(self, rid: str) -> list[dict[str, Any]]:
        """The `notifications/cancelled` the server got for request `rid`."""
        return [
            event
            for event in self.find("notif", method="notifications/cancelled")
            if str((event.get("params") or {}).get("requestId")) == rid
        ]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Poll until `condition()` is truthy (returns it); AssertionError past `timeout` s."""
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            assert time.monotonic() < deadline, f"not recorded: {self.events()[-10:]}"
            time.sleep(0.005)
        return found

    async def until(self, condition: Callable[[], Any], timeout: float = 20.0) -> Any:
        """`wait_for`, letting the event loop run meanwhile."""
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            assert time.monotonic() < deadline, f"not recorded: {self.events()[-10:]}"
            await asyncio.sleep(0.005)
        return found


async def until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Let the loop run until `condition()` is truthy (returns it); fails past `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
    return found


class McpRig:
    """An `McpManager` over a registry of its own, with the events it told, for one test."""

    def __init__(
        self,
        log_dir: Path,
        servers: list[McpServerConfig],
        environ: dict[str, str] | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        from chatui.config import McpConfig
        from chatui.mcp.manager import McpManager
        from chatui.tools.registry import ToolRegistry

        self.log_dir = log_dir
        self.registry = ToolRegistry()
        self.events: list[Any] = []
        config = McpConfig({server.name: server for server in servers})
        self.manager = McpManager(
            config, self.registry, log_dir=log_dir, environ=environ, secrets=secrets or []
        )
        self.manager.subscribe(self.events.append)

    def server(self, name: str) -> Any:
        return self.manager.servers[name]

    async def call(
        self,
        name: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        call_id: str = "call",
        progress: Callable[[Any], None] = lambda _progress: None,
    ) -> Any:
        """Call `tool` of server `name`; its result (a `CallToolResult`)."""
        return await self.server(name).call(
            tool, arguments or {}, call_id=call_id, on_progress=progress
        )

    async def text(self, name: str, tool: str, arguments: dict[str, Any] | None = None) -> str:
        """The text of a call's result."""
        result = await self.call(name, tool, arguments)
        return "".join(getattr(block, "text", "") for block in result.content)

    def cancel_sent(self, call_id: str) -> bool:
        return any(getattr(event, "call_id", None) == call_id for event in self.events)

    def states(self, name: str) -> list[str]:
        """The states server `name` went through, as told (`StatusChanged`), repeats dropped."""
        seen: list[str] = []
        for event in self.events:
            status = getattr(event, "status", None)
            if status is None or status.name != name:
                continue
            if not seen or seen[-1] != status.state:
                seen.append(status.state)
        return seen

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""
