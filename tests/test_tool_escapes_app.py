"""On screen: a tool that exits the program, or whose own work was cancelled, is a failed call.

Neither is a stop the user asked for: the call shows "failed" (never
"cancelled by you"), the reply is not marked interrupted, and the app goes
on to the model's next reply.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest

from chatui.messages import ResponseState
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.tool_call import ToolCallView
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, calls, words


def leave() -> str:
    """Leave."""
    sys.exit(3)


async def fetch() -> str:
    """Fetch something, awaiting work that something else cancels."""
    inner = asyncio.create_task(asyncio.Event().wait())  # Never set.
    asyncio.get_running_loop().call_soon(inner.cancel)
    return await inner


@pytest.mark.parametrize("tool", [leave, fetch], ids=["sys.exit", "its own work cancelled"])
async def test_a_tool_that_exits_or_is_cancelled_on_its_own_shows_failed(
    store: Store, tool: Callable[[], object]
) -> None:
    name = tool.__name__
    provider = ScriptedProvider(calls(("c1", name, "{}")), words("It failed."))
    app = make_app(store, provider, tools=ToolRegistry([Tool(tool)]))
    async with app.run_test(size=(80, 30)) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, settled(app))

        assert app.last_outcome is not None
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert [v.status for v in app.chat.query(ToolCallView)] == ["failed"]
        replies = list(app.chat.query(AssistantMessage))
        assert len(replies) == 2 and not any(r.has_class("-interrupted") for r in replies)
        assert app.is_running  # Still here.
