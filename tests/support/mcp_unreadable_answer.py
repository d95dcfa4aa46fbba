"""A raw MCP server over stdio whose tool answers with a line the SDK's JSON parser refuses.

    python -m tests.support.mcp_unreadable_answer

JavaScript's `JSON.stringify` writes a lone surrogate (a file name that is
not UTF-8, say) as the escape `\\ud800`; Python's `json` reads it, but the
SDK's parser (pydantic's) refuses the whole line. Its tool `name_of`
answers so, and `deep` with JSON nested deeper than that parser takes;
`unreadable_config` is its `[mcp.servers.NAME]` config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from chatui.config import McpServerConfig

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLS = [
    {"name": "name_of", "description": "A file's name.", "inputSchema": {"type": "object"}},
    {"name": "deep", "description": "Nested lists.", "inputSchema": {"type": "object"}},
]
DEPTH = 400  # Levels of nested lists in `deep`'s answer: more than the SDK's parser takes.


def unreadable_config(name: str = "odd", **fields: Any) -> McpServerConfig:
    return McpServerConfig(
        name=name,
        command=sys.executable,
        args=["-m", "tests.support.mcp_unreadable_answer"],
        cwd=str(ROOT),
        **fields,
    )


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line) if line.strip() else {}
        method, rid = message.get("method"), message.get("id")
        if rid is None:
            continue
        if method == "initialize":
            version = (message.get("params") or {}).get("protocolVersion", "2025-11-25")
            capabilities: dict[str, Any] = {"tools": {}}
            send(
                {
                    "id": rid,
                    "result": {
                        "protocolVersion": version,
                        "capabilities": capabilities,
                        "serverInfo": {"name": "odd", "version": "0"},
                    },
                }
            )
        elif method == "tools/list":
            send({"id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call" and (message.get("params") or {}).get("name") == "deep":
            nested: Any = []
            for _ in range(DEPTH):
                nested = [nested]
            send({"id": rid, "result": {"content": [], "structuredContent": {"x": nested}}})
        elif method == "tools/call":
            text = "caf\udce9.txt"  # `json.dumps` writes the surrogate as an escape.
            send({"id": rid, "result": {"content": [{"type": "text", "text": text}]}})
        else:
            send({"id": rid, "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    main()
