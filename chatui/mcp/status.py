"""What the rest of chatui sees of an MCP server, without importing the `mcp` SDK."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServerState(StrEnum):
    STOPPED = "stopped"  # Not started yet, disabled, or closed.
    STARTING = "starting"  # Spawned or connecting; handshake or tools/list pending.
    READY = "ready"  # Its tools are listed and in the registry.
    FAILED = "failed"  # Could not start, or died; `reason` says why. Next use starts it again.


@dataclass(frozen=True)
class ServerStatus:
    """One server as the "MCP servers" list shows it."""

    name: str
    transport: str  # "stdio" or "http".
    state: ServerState
    tools: int = 0  # Tools listed (READY), or kept from the last listing.
    reason: str = ""  # FAILED: why, in a sentence (untrusted parts already made visible).
    log_path: str = ""  # Where its stderr (stdio) and the SDK's messages about it go.
