"""What the MCP manager tells its listeners (the app, the screens), without importing the SDK.

`chatui.mcp.manager` re-exports these; a screen that only reacts to them
imports them from here and pays nothing for the `mcp` SDK's import.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatui.mcp.status import ServerStatus


@dataclass(frozen=True)
class StatusChanged:
    """A server's state, tool count or reason changed (it started, failed, relisted its tools)."""

    status: ServerStatus


@dataclass(frozen=True)
class CancelSent:
    """A stopped call's cancellation went out to its server (the call `call_id` of `server`).

    Sent once the SDK has written `notifications/cancelled` (stdio, and HTTP
    servers of the 2025 protocol) or aborted the call's POST (HTTP, 2026).
    """

    call_id: str
    server: str


McpEvent = StatusChanged | CancelSent
