"""Run on a pseudo-terminal by test_quit_never_hangs: chatui with a tool that blocks.

    python -m tests.support.quit_target DB WORKSPACE CASE TIMEOUT

The app is built as the `chatui` command builds it (`cli.run_app`), with a
provider whose first reply calls the tool of CASE and whose second says
"Done.":

- `fifo`: the built-in `read_file` on the named pipe `pipe` in WORKSPACE;
- `sync`: a sync tool that never returns;
- `to_thread`: an async tool that awaits `asyncio.to_thread` of a call that
  never returns (the event loop's default executor);
- `stubborn`: an async tool that swallows every cancellation (creating
  `WORKSPACE/cancelled` the first time) and never returns.

A tool that blocks first creates `WORKSPACE/started`. Each tool's timeout
is TIMEOUT seconds. The test types the prompt, then quits.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

from chatui.cli import run_app
from chatui.config import Config, ToolsConfig
from chatui.providers.base import StreamEnd
from chatui.store import Store
from chatui.tools.builtin import build_registry
from chatui.tools.registry import Tool, ToolRegistry
from tests.support.scripted import ScriptedProvider, tool_call, words


def registry(case: str, workspace: Path, timeout: float) -> tuple[ToolRegistry, str, str]:
    """The tools, and the call the model makes: (registry, tool name, arguments)."""
    never = threading.Event()

    def wait_forever() -> str:
        """Wait for something that never comes."""
        (workspace / "started").touch()
        never.wait()
        return "never"

    async def wait_in_the_default_executor() -> str:
        """Wait, in the event loop's default executor, for something that never comes."""
        return await asyncio.to_thread(wait_forever)

    async def refuse_to_stop() -> str:
        """Wait for ever, whatever happens."""
        (workspace / "started").touch()
        while True:
            try:
                await asyncio.Event().wait()  # Never set.
            except asyncio.CancelledError:
                (workspace / "cancelled").touch()

    if case == "fifo":
        config = ToolsConfig(enabled=["read_file"], ask=[], timeout=timeout)
        return build_registry(config, workspace=workspace), "read_file", '{"path": "pipe"}'
    functions = {
        "sync": wait_forever,
        "to_thread": wait_in_the_default_executor,
        "stubborn": refuse_to_stop,
    }
    function = functions[case]
    return ToolRegistry([Tool(function, timeout=timeout)]), function.__name__, "{}"


def main() -> int:
    db, workspace, case, timeout = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    tools, name, arguments = registry(case, workspace, float(timeout))
    provider = ScriptedProvider(
        [*tool_call(0, "call_1", name, [arguments]), StreamEnd("tool_calls")], words("Done.")
    )
    store = Store(db)
    return run_app(Config(system_prompt="", db_path=str(db)), store, provider, tools=tools)


if __name__ == "__main__":
    sys.exit(main())
