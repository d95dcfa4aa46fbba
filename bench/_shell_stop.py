"""Esc while a shell tool runs → its process group is gone: the case both cancel benchmarks share.

The model (remote or local) calls the real shell tool with a command that
starts a child and a grandchild (`sleep 30.<marker>` each). Once both are
alive, `Turn.cancel()` is called (what Esc does) and the figure is the time
from that call until no process of the group is alive any more (each one's
`/proc` state is dead or a zombie). Both read `time.monotonic`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatui.config import ToolsConfig
from chatui.messages import ToolCallPart, ToolResult
from chatui.store import Store
from chatui.tools.builtin import build_registry
from chatui.tools.protocol import Approval
from chatui.tools.registry import Tool, ToolRegistry
from chatui.turn import QuietObserver, Turn
from tests.support.processes import (
    alive,
    marker,
    nested_sleepers,
    one_command_schema,
    until_running,
)

GOAL_P99_MS = 50.0


def shell_registry(workspace: Path, only: str | None = None) -> ToolRegistry:
    """The real shell tool; `only`: the one command its schema allows (for a grammar)."""
    shell = build_registry(ToolsConfig(enabled=["shell"]), workspace=workspace)["shell"]
    parameters = one_command_schema(only) if only is not None else {}
    return ToolRegistry([Tool(shell.function, parameters=parameters, needs_approval=True)])


class Approving(QuietObserver):
    """Shows nothing; approves every call."""

    async def approve(self, call: ToolCallPart) -> Approval:
        return Approval.ONCE


async def one_stop(
    provider: Any, store: Store, tools: ToolRegistry, mark: str, prepare: Callable[[], None]
) -> tuple[float, list[ToolResult]]:
    """Start a turn whose shell call runs `nested_sleepers(mark)`; ms from cancel to gone."""
    prepare()
    conversation = store.create_conversation()

    turn = Turn(
        conversation=conversation,
        prompt="run it",
        provider=provider,
        store=store,
        observer=Approving(),
        tools=tools,
    )
    task = asyncio.create_task(turn.run())
    pids = [p.pid for p in await until_running(mark, 2, timeout=60)]
    cancelled = time.monotonic()
    turn.cancel()
    while any(alive(pid) for pid in pids):
        await asyncio.sleep(0.0002)
    gone = time.monotonic()
    await task
    results = [i for i in conversation.items if isinstance(i, ToolResult)]
    return (gone - cancelled) * 1000, results


async def shell_stops(
    provider_for: Callable[[Path], Any],
    script: Callable[[str], None],
    stops: int,
    *,
    grammar: bool = False,
) -> list[float]:
    """`stops` trials; `script(command)` makes the model call the shell with `command`."""
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store(root / "bench.sqlite3")
        provider = provider_for(root)
        try:
            for _ in range(stops):
                mark = marker()
                command = nested_sleepers(mark)
                tools = shell_registry(root, only=command if grammar else None)
                ms, results = await one_stop(
                    provider, store, tools, mark, lambda c=command: script(c)
                )
                if not results or any(r.state != "cancelled" for r in results):
                    raise RuntimeError(f"the shell call was not cancelled: {results}")
                figures.append(ms)
        finally:
            close = getattr(provider, "close", None)
            if close is not None:
                await close()
            store.close()
    return figures
