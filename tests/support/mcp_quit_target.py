"""Run on a pseudo-terminal by test_mcp_app: chatui with an MCP server whose tool runs on.

    python -m tests.support.mcp_quit_target DB RECORD MARKER

The app is built as the `chatui` command builds it (`cli.run_app`), its
config naming one MCP server, "std" (`tests.support.mcp_servers standard`
over stdio, recording to RECORD, asking no approval). The provider's first
reply calls `std__spawn_child` (a `sleep MARKER` in the server's process
group), its second `std__slow` for 600 s, its third says "Done.". Run it
with `XDG_STATE_HOME` set: the servers' logs go under it
(`chatui/log/mcp/std.log`), whose "listed 6 tools" says that the tools are
in the registry.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chatui.cli import run_app
from chatui.config import Config, McpConfig
from chatui.providers.base import StreamEnd
from chatui.store import Store
from tests.support.mcp import stdio_config
from tests.support.scripted import ScriptedProvider, tool_call, words


def main() -> int:
    db, record, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    server = stdio_config("std", "standard", record, ask=False)
    config = Config(system_prompt="", db_path=str(db), mcp=McpConfig({"std": server}))
    spawn = json.dumps({"marker": marker})
    provider = ScriptedProvider(
        [*tool_call(0, "call_1", "std__spawn_child", [spawn]), StreamEnd("tool_calls")],
        [*tool_call(0, "call_2", "std__slow", ['{"seconds": 600}']), StreamEnd("tool_calls")],
        words("Done."),
    )
    return run_app(config, Store(db), provider)


if __name__ == "__main__":
    sys.exit(main())
