"""MCP tools against a real server (the SDK's `MCPServer` over stdio, via `McpServer`).

The content server (`tests.support.mcp_content_server`) returns control
sequences, markup, 5 MB of text, images, structure, resources and errors;
each comes back through `McpTool` and the registry as a `ToolResult` that
keeps its text literally, within the limit. Its progress reaches the turn's
task in order, and an image goes on to Anthropic as an image block that
the validating wire server accepts, and to OpenAI as its summary. A stop
of the tool's call cancels it on the server (the SDK's own `MCPServer` of
`tests.support.mcp_servers`), which answers the next call.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatui.config import ToolsConfig
from chatui.mcp.logs import ServerLog
from chatui.mcp.server import McpServer
from chatui.mcp.tools import McpTool, tools_for
from chatui.messages import Attachment, ToolCallPart, ToolResult
from chatui.store import Store
from chatui.tools.protocol import Approval, ToolProgress
from chatui.tools.registry import CallContext, ToolRegistry
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.mcp import McpRig, Record, stdio_config, until
from tests.support.mcp_content_server import HOSTILE, PNG, content_config
from tests.support.mcp_unreadable_answer import unreadable_config
from tests.support.remote import anthropic_at, openai_at, settings
from tests.support.turns import make_turn, stored
from tests.support.wire import WireServer

LIMIT = ToolsConfig().output_limit
PNG_DATA = base64.b64encode(PNG).decode()


@pytest.fixture
async def content(tmp_path: Path) -> AsyncIterator[McpServer]:
    server = McpServer(content_config(ask=False), ServerLog(tmp_path / "content.log"))
    try:
        await asyncio.wait_for(server.ready(), 30)
        yield server
    finally:
        await server.close()


def registry_for(server: McpServer) -> ToolRegistry:
    registry = ToolRegistry()
    registry.set_group("mcp:content", tools_for(server, server.listing, set()))
    return registry


async def allow(call: ToolCallPart) -> Approval:
    return Approval.ONCE


async def ignore(status: str, progress: ToolProgress | None = None) -> None:
    pass


async def run(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> ToolResult:
    call = ToolCallPart(f"call_{name}", name, json.dumps(arguments), complete=True)
    return await asyncio.wait_for(registry.run(call, allow, ignore), 30)


async def test_every_kind_of_content_comes_back_as_a_literal_capped_result(
    content: McpServer,
) -> None:
    registry = registry_for(content)
    assert {"content__hostile", "content__chart", "content__steps"} <= set(registry.names)

    hostile = await run(registry, "content__hostile", {})
    assert (hostile.state, hostile.content) == ("ok", HOSTILE)

    huge = await run(registry, "content__huge", {"size": 5_000_000})
    assert huge.content.startswith("x" * LIMIT + "\n[… cut: the result has 5,000,000 characters")
    assert len(huge.content) < LIMIT + 200

    doubled = await run(registry, "content__huge_structured", {"size": 100_000})
    assert doubled.structured is None and "structured content" in doubled.content

    chart = await run(registry, "content__chart", {})
    assert chart.content == f"The chart:\n[image/png, {len(PNG)} B]"
    assert chart.attachments == [Attachment("image/png", len(PNG), PNG_DATA)]

    table = await run(registry, "content__table", {})
    assert table.structured == {
        "rows": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        "total": 2,
    }
    assert json.loads(table.content) == table.structured

    mixed = await run(registry, "content__mixed", {})
    assert mixed.content.splitlines() == [
        "Here:",
        f"[image/png, {len(PNG)} B]",
        "[resource link report: file:///r.pdf, application/pdf, 2.0 kB]",
        "[resource memo://1, text/plain, 9 characters]",
        "memo text",
    ]

    fails = await run(registry, "content__fails", {})
    assert (fails.state, fails.content) == ("error", "Error executing tool fails")

    refused = await run(registry, "content__huge", {"size": "big"})
    assert refused.state == "error" and refused.content.startswith(
        "Invalid arguments for content__huge: size must be an integer, not a string."
    )


async def test_progress_reaches_the_turns_task_in_order(content: McpServer, tmp_path: Path) -> None:
    [tool] = [t for t in tools_for(content, content.listing, set()) if t.tool_name == "steps"]
    assert isinstance(tool, McpTool)
    ack = tmp_path / "ack"
    ack.write_text("")
    seen: list[tuple[float, float | None, str | None]] = []
    tasks: set[asyncio.Task[Any] | None] = set()

    async def progress(update: ToolProgress) -> None:
        seen.append((update.done, update.total, update.message))
        tasks.add(asyncio.current_task())
        with ack.open("a") as file:  # Lets the server send the next report.
            file.write(f"{update.done}\n")

    running = asyncio.create_task(
        tool.call({"count": 4, "ack": str(ack)}, CallContext("c1", progress))
    )
    output = await asyncio.wait_for(running, 30)
    assert output.content == "stepped"
    assert seen == [(n, 4, f"step {n}") for n in (1, 2, 3, 4)]
    assert tasks == {running}


@pytest.mark.parametrize("api", ["anthropic", "openai"])
async def test_an_image_from_a_real_server_goes_to_each_api_as_it_takes_it(
    api: str, content: McpServer, store: Store
) -> None:
    if api == "anthropic":
        wire = WireServer(validate=aw.validate)
        first = [*aw.start(), *aw.tool_block(0, "toolu_1", "content__chart", "{}")]
        replies = [[*first, *aw.ending("tool_use")], aw.reply("A black square.")]
    else:
        wire = WireServer(validate=ow.validate)
        call = ow.tool_call(0, "call_1", "content__chart", "{}")
        replies = [[*call, *ow.ending("tool_calls")], ow.reply("A black square.")]
    with wire:
        wire.play(*replies)
        provider = (anthropic_at if api == "anthropic" else openai_at)(wire.base_url)
        turn, _ = make_turn(store, provider, tools=registry_for(content), settings=settings())
        await asyncio.wait_for(turn.run(), 30)
    assert [r.refused for r in wire.requests] == [None, None]  # Tools and history: accepted.
    [result] = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    assert result.attachments == [Attachment("image/png", len(PNG), PNG_DATA)]
    sent = json.dumps(wire.requests[1].body)
    if api == "anthropic":
        tool_result = wire.requests[1].body["messages"][2]["content"][0]
        assert tool_result["content"][1]["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": PNG_DATA,
        }
    else:
        assert PNG_DATA not in sent and f"[image/png, {len(PNG)} B]" in sent


async def test_a_stop_of_the_tool_cancels_the_call_on_the_server_which_answers_the_next(
    tmp_path: Path,
) -> None:
    record = Record(tmp_path / "record.jsonl")
    server = McpServer(
        stdio_config("std", "standard", record.path), ServerLog(tmp_path / "std.log")
    )
    try:
        await asyncio.wait_for(server.ready(), 30)
        tools = {t.tool_name: t for t in tools_for(server, server.listing, set())}
        progressed = asyncio.Event()

        async def progress(update: ToolProgress) -> None:
            progressed.set()

        running = asyncio.create_task(
            tools["slow"].call({"seconds": 30}, CallContext("c1", progress))
        )
        await asyncio.wait_for(progressed.wait(), 30)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        [started] = record.find("start", tool="slow")
        await record.until(lambda: record.find("handler_cancelled", rid=started["rid"]))
        assert record.cancelled(started["rid"])
        echoed = await asyncio.wait_for(
            tools["echo"].call({"text": "still here"}, CallContext("c2", progress)), 30
        )
        assert echoed.content == "still here"
    finally:
        await server.close()


async def test_a_tools_name_stays_its_own_when_another_tool_that_reads_the_same_is_added(
    tmp_path: Path,
) -> None:
    """A name never moves to another tool: an approval "for the conversation" is by name.

    `say.it` is offered as `content__say_it`; then the server adds `say_it`,
    whose name needs no change and would take that name from it.
    """
    rig = McpRig(tmp_path / "logs", [content_config(ask=False)])
    try:
        await asyncio.wait_for(rig.server("content").ready(), 30)
        assert rig.registry["content__say_it"].tool_name == "say.it"  # type: ignore[attr-defined]
        count = len(rig.registry.names)

        await rig.call("content", "grow")

        await until(lambda: len(rig.registry.names) == count + 1)
        assert rig.registry["content__say_it"].tool_name == "say.it"  # type: ignore[attr-defined]
        assert (await run(rig.registry, "content__say_it", {})).content == "said with a dot"
        [other] = [n for n in rig.registry.names if n.startswith("content__say_it_")]
        assert (await run(rig.registry, other, {})).content == "said with an underscore"
    finally:
        await rig.manager.close()


async def test_an_answer_the_sdks_parser_refuses_is_read_or_fails_the_call_at_once(
    tmp_path: Path,
) -> None:
    """A lone surrogate escape (`\\udce9`, as JavaScript writes a file name that is not
    UTF-8) is read as U+FFFD; JSON nested too deep to read fails its call, at once: neither
    waits for the call's timeout (600 s here)."""
    server = McpServer(unreadable_config(ask=False, timeout=600), ServerLog(tmp_path / "odd.log"))
    try:
        await asyncio.wait_for(server.ready(), 30)
        registry = ToolRegistry()
        registry.set_group("mcp:odd", tools_for(server, server.listing, set()))
        name = await asyncio.wait_for(run(registry, "odd__name_of", {}), 30)
        deep = await asyncio.wait_for(run(registry, "odd__deep", {}), 30)
        after = await asyncio.wait_for(run(registry, "odd__name_of", {}), 30)
    finally:
        await server.close()
    assert (name.state, name.content) == ("ok", "caf\ufffd.txt")
    assert deep.state == "error" and "could not read the server's answer" in deep.content
    assert (after.state, after.content) == ("ok", "caf\ufffd.txt")  # The server is still used.
