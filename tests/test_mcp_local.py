"""MCP tools' schemas with the local model: its tool-call grammar takes them, and leaves them be.

With `local.tool_choice = "required"`, the local model's reply is held to
the tools' schemas by a grammar made from them. An MCP server's schema may
use `$defs` and `$ref` (which must resolve within that schema, not the
grammar's wrapping of it), or a reference outside it (which the grammar
cannot follow: that tool's arguments are then held to being an object, and
the registry checks them before any call). Making the grammar must not
change the schemas, which are sent as they are on every request.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from chatui.cancel import CancelToken
from chatui.history import ChatMessage
from chatui.mcp.schema import ToolSchema
from chatui.providers.base import ModelRequest, ToolCallEnd, ToolCallStart, ToolSpec
from chatui.providers.local.provider import LocalProvider
from chatui.providers.local.tool_grammar import tool_grammar
from chatui.tools.schema import parse_arguments
from tests.support.local import local_config

RANGE = {
    "type": "object",
    "$defs": {
        "range": {
            "type": "object",
            "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
            "required": ["start", "end"],
            "additionalProperties": False,
        }
    },
    "properties": {"lines": {"$ref": "#/$defs/range"}},
    "required": ["lines"],
    "additionalProperties": False,
}
OUTSIDE = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/a.json"}}}


def spec(name: str, schema: dict[str, Any]) -> ToolSpec:
    return ToolSpec(name, "A tool of an MCP server.", ToolSchema.load(schema).parameters)


def test_a_grammar_is_made_from_refs_inside_and_outside_and_changes_no_schema() -> None:
    tools = [spec("srv__lines", RANGE), spec("srv__outside", OUTSIDE)]
    before = copy.deepcopy([tool.parameters for tool in tools])
    tool_grammar(tools)
    tool_grammar(tools)  # Twice: a second grammar from the same specs.
    assert [tool.parameters for tool in tools] == before


async def test_a_required_call_follows_a_schema_with_defs(tiny_model: Path) -> None:
    provider = LocalProvider(
        local_config(tiny_model, tool_choice="required", max_tokens=600), state_dir=None
    )
    await provider.prepare()
    try:
        tools = [spec("srv__lines", RANGE)]
        request = ModelRequest([ChatMessage("user", "Lines?")], CancelToken(), tools, "c")
        async with provider.stream(request) as stream:
            events = [event async for event in stream]
    finally:
        await provider.close()
    ended = {e.index for e in events if isinstance(e, ToolCallEnd)}
    starts = [e for e in events if isinstance(e, ToolCallStart) and e.index in ended]
    assert starts and {s.name for s in starts} == {"srv__lines"}
    arguments: dict[int, str] = {}
    for event in events:
        if hasattr(event, "arguments"):
            arguments[event.index] = arguments.get(event.index, "") + event.arguments
    schema = ToolSchema.load(RANGE)
    for start in starts:  # Random weights, yet each call fits the schema, its $ref followed.
        schema.check(parse_arguments(arguments[start.index]))


def test_a_schemas_huge_bounds_make_a_grammar_of_modest_size() -> None:
    """`maxLength: 10**7` spelled out as GBNF is 80 MB, built on every request (10**9: 8 GB)."""
    huge = 10**7
    schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": huge},
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": huge},
            "code": {"type": "string", "pattern": f"^a{{{huge}}}$"},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 8}},
        },
    }
    grammar = tool_grammar([spec("srv__huge", schema)])
    assert len(grammar._grammar) < 100_000
    assert "{2,8}" in grammar._grammar or "char char" in grammar._grammar  # Small bounds kept.
