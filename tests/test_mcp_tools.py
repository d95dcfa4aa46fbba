"""MCP tools in the registry: their names, specs, approval, and calls (on a stand-in server).

The server here is a stand-in with `McpServer`'s calling surface, so that
each case (progress from outside the turn's task, a late progress, a stop,
a failed call) is held exactly; `test_mcp_tools_server.py` runs the same
tool against real servers.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import mcp_types as mt
import pytest

from chatui.config import McpServerConfig, ToolsConfig
from chatui.history import build_history
from chatui.mcp.logs import ServerLog
from chatui.mcp.schema import ToolSchema
from chatui.mcp.server import McpCallError
from chatui.mcp.tools import (
    DESCRIPTION_LIMIT,
    SCHEMA_BUDGET,
    SCHEMA_LIMIT,
    ToolNames,
    api_names,
    tools_for,
)
from chatui.messages import ToolCallPart, ToolResult
from chatui.providers.anthropic_messages import to_anthropic_messages
from chatui.providers.base import ToolSpec
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.store import Store
from chatui.tools.builtin import build_registry
from chatui.tools.protocol import Approval, ToolProgress
from chatui.tools.registry import TOOL_LIMIT, CallContext, ToolOutput, ToolRegistry
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.remote import openai_at, settings
from tests.support.turns import make_turn
from tests.support.wire import WireServer

API_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OBJECT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


class StandIn:
    """`McpServer`'s calling surface: `name`, `config`, `log`, and `call`, played by the test."""

    def __init__(self, tmp_path: Path, name: str = "srv", **config: Any) -> None:
        self.name = name
        self.config = McpServerConfig(name=name, command="x", **config)
        self.log = ServerLog(tmp_path / f"{name}.log")
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.on_progress: Any = None
        self.answer: asyncio.Future[mt.CallToolResult] | None = None
        self.cancelled = asyncio.Event()

    async def call(
        self, tool: str, arguments: dict[str, Any], *, call_id: str, on_progress: Any
    ) -> mt.CallToolResult:
        self.calls.append((tool, arguments, call_id))
        self.on_progress = on_progress
        self.answer = asyncio.get_running_loop().create_future()
        try:
            return await self.answer
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def listing(*names: str, schema: Any = None, description: str | None = "A tool.") -> list:
    return [
        mt.Tool(name=name, description=description, input_schema=schema or OBJECT) for name in names
    ]


def text_result(text: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=text)])


# Names


def test_names_carry_the_server_and_only_characters_both_apis_take() -> None:
    names = api_names("git", ["status", "repo.log", "a/b c", "ünï", "x" * 128], set())
    assert names["status"] == "git__status"
    assert names["repo.log"] == "git__repo_log"
    assert names["a/b c"] == "git__a_b_c"
    assert names["ünï"] == "git___n_"
    assert all(API_NAME.match(name) and name.startswith("git__") for name in names.values())


def test_a_long_name_is_shortened_with_a_short_stable_hash() -> None:
    long_a, long_b = "a" * 100 + ".one", "a" * 100 + ".two"
    first = api_names("srv", [long_a, long_b], set())
    again = api_names("srv", [long_b, long_a], set())
    assert first == again
    assert len(first[long_a]) == 64 and len(first[long_b]) == 64
    assert first[long_a] != first[long_b]
    assert re.fullmatch(r"srv__a{52}_[0-9a-f]{6}", first[long_a])


def test_names_that_clash_are_told_apart_the_same_way_in_every_listing() -> None:
    forward = api_names("s", ["a.b", "a_b", "a-b"], set())
    backward = api_names("s", ["a-b", "a_b", "a.b"], set())
    assert forward == backward
    assert forward["a_b"] == "s__a_b"  # A name that needed no change keeps it.
    assert forward["a.b"].startswith("s__a_b_") and len(set(forward.values())) == 3


def test_a_name_taken_by_a_built_in_or_another_server_is_not_reused(tmp_path: Path) -> None:
    registry = build_registry(ToolsConfig(), workspace=tmp_path)
    one, other = StandIn(tmp_path, "a"), StandIn(tmp_path, "a__b")
    first = tools_for(one, listing("b__c", "calc"), set(registry.names))
    registry.set_group("mcp:a", first)
    second = tools_for(other, listing("c"), set(registry.names))
    registry.set_group("mcp:a__b", second)
    assert [t.name for t in first] == ["a__b__c", "a__calc"]
    assert second[0].name.startswith("a__b__c_") and API_NAME.match(second[0].name)
    assert (second[0].server_name, second[0].tool_name) == ("a__b", "c")
    # Listed again, each keeps its name.
    again = tools_for(other, listing("c"), set(registry.names) - {second[0].name})
    assert again[0].name == second[0].name


def test_a_tool_with_a_schema_that_cannot_be_used_is_left_out_and_logged(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    tools = listing("good") + listing("bad", schema={"type": "object", "required": "x"})
    tools += listing("scalar", schema={"type": "string"}) + listing("good")
    made = tools_for(server, tools, set())
    assert [t.tool_name for t in made] == ["good"]
    log = server.log.path.read_text()
    assert "'bad' was left out: its input schema is not valid JSON Schema" in log
    assert "'scalar' was left out: its input schema is for a string, not an object" in log
    assert "'good' was listed twice" in log


# The spec, approval, timeout


def test_the_spec_passes_the_schema_through_and_caps_the_description(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    [tool] = tools_for(server, listing("t", description="d" * 5000), set())
    assert tool.spec.parameters == OBJECT
    assert len(tool.spec.description) == DESCRIPTION_LIMIT
    [bare] = tools_for(server, listing("t", description=None), set())
    assert bare.spec.description == "The tool t of the MCP server srv."


def test_approval_and_timeout_come_from_the_servers_config(tmp_path: Path) -> None:
    asks = StandIn(tmp_path, timeout=7.5, ask_tools={"read": False})
    made = {t.tool_name: t for t in tools_for(asks, listing("read", "write"), set())}
    assert (made["read"].needs_approval, made["write"].needs_approval) == (False, True)
    assert made["read"].timeout == 7.5
    trusting = StandIn(tmp_path, ask=False, ask_tools={"write": True})
    made = {t.tool_name: t for t in tools_for(trusting, listing("read", "write"), set())}
    assert (made["read"].needs_approval, made["write"].needs_approval) == (False, True)


# Calls


async def allow(call: ToolCallPart) -> Approval:
    return Approval.ONCE


async def ignore(status: str, progress: ToolProgress | None = None) -> None:
    pass


def registry_of(server: StandIn, *names: str) -> ToolRegistry:
    registry = ToolRegistry()
    registry.set_group("mcp:srv", tools_for(server, listing(*names), set()))
    return registry


async def test_a_call_reaches_the_server_by_its_own_name_with_the_arguments_as_written(
    tmp_path: Path,
) -> None:
    server = StandIn(tmp_path)
    registry = registry_of(server, "say.it")
    call = ToolCallPart("c1", "srv__say_it", '{"text": "hi", "extra": 1.0}', complete=True)
    running = asyncio.create_task(registry.run(call, allow, ignore))
    while server.answer is None:
        await asyncio.sleep(0)
    server.answer.set_result(text_result("\x1b[31mhi"))
    result = await running
    assert server.calls == [("say.it", {"text": "hi", "extra": 1.0}, "c1")]
    assert (result.state, result.content) == ("ok", "\x1b[31mhi")


async def test_invalid_arguments_never_reach_the_server(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    registry = registry_of(server, "say")
    call = ToolCallPart("c1", "srv__say", '{"text": 5}', complete=True)
    result = await registry.run(call, allow, ignore)
    assert (result.state, server.calls) == ("error", [])
    assert result.content == (
        "Invalid arguments for srv__say: text must be a string, not a number. Nothing was run."
    )


async def test_a_failed_call_is_an_error_result_with_its_sentence(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    registry = registry_of(server, "say")
    call = ToolCallPart("c1", "srv__say", '{"text": "x"}', complete=True)
    running = asyncio.create_task(registry.run(call, allow, ignore))
    while server.answer is None:
        await asyncio.sleep(0)
    server.answer.set_exception(McpCallError("The MCP server srv stopped during the call."))
    result = await running
    assert (result.state, result.content) == (
        "error",
        "The MCP server srv stopped during the call.",
    )


async def test_progress_reaches_the_turns_task_in_order_and_none_after_the_call_ended(
    tmp_path: Path,
) -> None:
    server = StandIn(tmp_path)
    [tool] = tools_for(server, listing("work"), set())
    seen: list[tuple[float, str | None, asyncio.Task[Any] | None]] = []
    delivered = asyncio.Event()

    async def progress(update: ToolProgress) -> None:
        seen.append((update.done, update.message, asyncio.current_task()))
        if update.done == 3:
            delivered.set()

    running = asyncio.create_task(tool.call({"text": "x"}, CallContext("c1", progress)))
    while server.answer is None:
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    for n in (1, 2, 3):  # From the loop, as the SDK's callback runs: outside the turn's task.
        loop.call_soon(server.on_progress, ToolProgress(n, 3, f"step {n}"))
    await delivered.wait()
    server.answer.set_result(text_result("done"))
    server.on_progress(ToolProgress(4, 4, "after the answer came"))
    output = await running
    server.on_progress(ToolProgress(5, 5, "after the call ended"))
    await asyncio.sleep(0)
    assert [(done, message) for done, message, _ in seen] == [
        (1, "step 1"),
        (2, "step 2"),
        (3, "step 3"),
    ]
    assert all(task is running for _, _, task in seen)
    assert isinstance(output, ToolOutput) and output.content == "done"


async def test_a_stop_cancels_the_servers_call_at_once_and_forwards_nothing_after(
    tmp_path: Path,
) -> None:
    server = StandIn(tmp_path)
    [tool] = tools_for(server, listing("work"), set())
    seen: list[ToolProgress] = []

    async def progress(update: ToolProgress) -> None:
        seen.append(update)

    running = asyncio.create_task(tool.call({"text": "x"}, CallContext("c1", progress)))
    while server.answer is None:
        await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.wait_for(server.cancelled.wait(), 5)
    server.on_progress(ToolProgress(1, 2, "after the stop"))
    await asyncio.sleep(0)
    assert seen == []


async def test_a_progress_message_is_cut_and_masked(tmp_path: Path) -> None:
    from chatui.redact import Redactor, current_redactor

    secret = "sk-test-4f9a2c7e1b8d6053aa71c0de99f1e2b3"
    server = StandIn(tmp_path)
    [tool] = tools_for(server, listing("work"), set())
    seen: list[ToolProgress] = []
    got = asyncio.Event()

    async def progress(update: ToolProgress) -> None:
        seen.append(update)
        got.set()

    token = current_redactor.set(Redactor([secret]))
    try:
        running = asyncio.create_task(tool.call({"text": "x"}, CallContext("c1", progress)))
    finally:
        current_redactor.reset(token)
    while server.answer is None:
        await asyncio.sleep(0)
    server.on_progress(ToolProgress(1, None, f"{secret} " + "m" * 10_000))
    await got.wait()
    server.answer.set_result(text_result("done"))
    await running
    [update] = seen
    assert update.message is not None and update.message.startswith("*** mmm")
    assert len(update.message) <= 500


# Names for good, and how many tools


def test_a_name_given_to_one_servers_tool_is_never_given_to_another(tmp_path: Path) -> None:
    """An approval "for the conversation" is by name: a name must not move to another tool."""
    names = ToolNames()
    registry = ToolRegistry()
    one, other = StandIn(tmp_path, "a"), StandIn(tmp_path, "a__b")
    made: dict[str, list[Any]] = {}

    def listed(server: StandIn, *tools: str) -> dict[str, str]:
        group = f"mcp:{server.name}"
        mine = {t.name for t in made.get(group, [])}
        taken = {n for n in registry.names if n not in mine}
        made[group] = tools_for(server, listing(*tools), taken, names=names)
        registry.set_group(group, made[group])
        return {t.tool_name: t.name for t in made[group]}

    assert listed(one, "b__c", "x.y") == {"b__c": "a__b__c", "x.y": "a__x_y"}
    listed(one)  # Both gone for a while (the server restarted with no tools, say).
    assert listed(other, "c")["c"] != "a__b__c"
    again = listed(one, "x_y", "x.y", "b__c")
    assert (again["b__c"], again["x.y"]) == ("a__b__c", "a__x_y")  # Their names still...
    assert again["x_y"].startswith("a__x_y_")  # ...though `x_y` reads so as it is.


def test_a_server_listing_thousands_of_tools_offers_as_many_as_a_request_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each schema checked costs milliseconds on the event loop: only those offered are."""
    checked: list[Any] = []
    load = ToolSchema.load
    monkeypatch.setattr(ToolSchema, "load", lambda schema: checked.append(schema) or load(schema))
    server = StandIn(tmp_path)
    tools = [
        mt.Tool(name=f"t{n}", input_schema={"type": "object", "title": f"t{n}"})
        for n in range(10_000)
    ]
    made = tools_for(server, tools, {"shell", "read_file"})
    assert [t.tool_name for t in made] == [f"t{n}" for n in range(TOOL_LIMIT)]
    assert len(checked) == TOOL_LIMIT
    log = server.log.path.read_text()
    assert f"{10_000 - TOOL_LIMIT:,} tools were left out" in log


def test_a_schema_too_large_to_send_with_every_request_leaves_its_tool_out(
    tmp_path: Path,
) -> None:
    server = StandIn(tmp_path)
    big = {"type": "object", "properties": {f"p{n}": {"type": "string"} for n in range(5_000)}}
    made = tools_for(server, listing("small") + listing("big", schema=big), set())
    assert [t.tool_name for t in made] == ["small"]
    assert "'big' was left out: its input schema is over" in server.log.path.read_text()


def test_a_servers_tools_past_its_schema_budget_are_left_out(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    size = SCHEMA_LIMIT - 100
    tools = [
        mt.Tool(name=f"t{n}", input_schema={"type": "object", "description": f"{n}" * size})
        for n in range(10)
    ]
    made = tools_for(server, tools, set())
    assert 0 < len(made) < 10
    assert sum(len(json.dumps(t.spec.parameters)) for t in made) <= SCHEMA_BUDGET
    assert f"{10 - len(made)} tools were left out" in server.log.path.read_text()


def test_the_tools_offered_are_at_most_what_a_request_takes_built_ins_first(
    tmp_path: Path,
) -> None:
    registry = build_registry(ToolsConfig(), workspace=tmp_path)
    built_ins = registry.names
    many = [f"t{n:03d}" for n in range(100)]
    for name in ("b", "a"):  # Listed in another order than their names'.
        server = StandIn(tmp_path, name)
        registry.set_group(f"mcp:{name}", tools_for(server, listing(*many), set(registry.names)))
    offered = [spec.name for spec in registry.specs()]
    assert len(offered) == TOOL_LIMIT
    assert offered[: len(built_ins)] == built_ins
    assert offered[len(built_ins) :] == [f"a__{t}" for t in many] + [
        f"b__{t}" for t in many[: TOOL_LIMIT - len(built_ins) - 100]
    ]


async def test_a_request_with_more_tools_than_openai_takes_validates(
    tmp_path: Path, store: Store
) -> None:
    registry = build_registry(ToolsConfig(), workspace=tmp_path)
    for name in ("a", "b"):
        server = StandIn(tmp_path, name)
        many = [f"t{n:03d}" for n in range(100)]
        registry.set_group(f"mcp:{name}", tools_for(server, listing(*many), set(registry.names)))
    with WireServer(validate=ow.validate) as openai:
        openai.play(ow.reply("Hello."))
        turn, _ = make_turn(store, openai_at(openai.base_url), tools=registry, settings=settings())
        await turn.run()
        [sent] = openai.requests
    assert sent.refused is None
    assert len(sent.body["tools"]) == TOOL_LIMIT


class Anything:
    """A tool that takes any object, as an MCP tool with a recursive schema does."""

    name = "srv__tree"
    needs_approval = False
    timeout = 5.0
    spec = ToolSpec("srv__tree", "Takes a tree.", {"type": "object"})

    def __init__(self) -> None:
        self.calls = 0

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments

    async def call(self, arguments: dict[str, Any], context: CallContext) -> str:
        self.calls += 1
        return "ran"


@pytest.mark.parametrize("depth", [600, 5_000])
async def test_arguments_nested_too_deeply_are_refused_and_every_later_request_goes_out(
    store: Store, depth: int
) -> None:
    """Python's JSON and the prompt's formatting recurse: such a call must not sink the chat."""
    deep = '{"c":' * depth + "{}" + "}" * depth
    tool = Anything()
    with WireServer(validate=ow.validate) as openai:
        openai.play(
            [*ow.tool_call(0, "call_1", "srv__tree", deep), *ow.ending("tool_calls")],
            ow.reply("It was refused."),
            ow.reply("Hello again."),
        )
        provider = openai_at(openai.base_url)
        registry = ToolRegistry([tool])
        turn, _ = make_turn(store, provider, tools=registry, settings=settings())
        await turn.run()
        conversation = turn.conversation
        again, _ = make_turn(
            store, provider, conversation=conversation, tools=registry, settings=settings()
        )
        await again.run()
        requests = openai.requests
    [result] = [item for item in conversation.items if isinstance(item, ToolResult)]
    assert (result.state, tool.calls) == ("error", 0)
    assert result.content == (
        "Invalid arguments for srv__tree: they nest more than 100 levels deep. Nothing was run."
    )
    assert [r.refused for r in requests] == [None, None, None]
    history = build_history(conversation.items)
    _, messages = to_anthropic_messages(history)
    assert aw.validate({"max_tokens": 1, "messages": messages}) is None
    prompt = ChatFormat(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>").render(history)
    assert "It was refused." in prompt


async def test_a_call_whose_progress_report_fails_is_cancelled_on_the_server(
    tmp_path: Path,
) -> None:
    """Whatever ends the wait for a call, the call does not run on unawaited."""
    server = StandIn(tmp_path)
    [tool] = tools_for(server, listing("work"), set())

    async def progress(update: ToolProgress) -> None:
        raise RuntimeError("the screen could not show it")

    running = asyncio.create_task(tool.call({"text": "x"}, CallContext("c1", progress)))
    while server.answer is None:
        await asyncio.sleep(0)
    server.on_progress(ToolProgress(1, 2, "half"))
    with pytest.raises(RuntimeError):
        await running
    await asyncio.wait_for(server.cancelled.wait(), 5)
