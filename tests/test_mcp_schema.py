"""An MCP tool's arguments checked against its own JSON Schema before the call.

The schemas are what real servers publish: nested objects, `$ref`/`$defs`,
`oneOf`, type lists, `enum`, `required`. The arguments go to the server as
the model wrote them (no default filled in, no number coerced), and a schema
that cannot be used leaves its tool out with a reason.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chatui.mcp.schema import BadSchema, ToolSchema
from chatui.tools.schema import InvalidArguments

ROOT = Path(__file__).resolve().parent.parent

SEARCH = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "range": {
            "type": "object",
            "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
            "required": ["start"],
        }
    },
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "lines": {"$ref": "#/$defs/range"},
        "options": {
            "type": "object",
            "properties": {"depth": {"type": "integer", "minimum": 0, "default": 1}},
            "additionalProperties": False,
        },
        "target": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "note": {"type": ["string", "null"]},
        "mode": {"enum": ["fast", "exact"]},
        "ratio": {"type": "number"},
    },
    "required": ["query"],
}


def problem(schema: dict[str, Any], arguments: dict[str, Any]) -> str:
    with pytest.raises(InvalidArguments) as raised:
        ToolSchema.load(schema).check(arguments)
    return str(raised.value)


def test_arguments_that_fit_pass_unchanged_with_no_default_filled_in() -> None:
    arguments = {
        "query": "x",
        "lines": {"start": 3},
        "options": {},
        "target": 7,
        "note": None,
        "mode": "exact",
        "ratio": 2,
    }
    checked = ToolSchema.load(SEARCH).check(dict(arguments))
    assert checked == arguments
    assert checked["options"] == {}  # The server fills its own defaults.
    assert type(checked["ratio"]) is int  # Not made a float.


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "missing required argument 'query'"),
        ({"query": 3}, "query must be a string, not a number"),
        ({"query": ""}, "query: '' should be non-empty"),
        ({"query": "x", "lines": {"end": 4}}, "lines: missing required property 'start'"),
        ({"query": "x", "lines": {"start": "3"}}, "lines.start must be an integer, not a string"),
        ({"query": "x", "options": {"depth": -1}}, "options.depth: -1 is less than the minimum"),
        ({"query": "x", "options": {"deep": 1}}, "options: Additional properties"),
        ({"query": "x", "target": 1.5}, "target: 1.5 is not valid under any of the given"),
        ({"query": "x", "note": 5}, "note must be a string or null, not a number"),
        ({"query": "x", "mode": "slow"}, 'mode must be one of "fast", "exact", not "slow"'),
    ],
)
def test_arguments_that_break_the_schema_are_refused_with_a_sentence(
    arguments: dict[str, Any], expected: str
) -> None:
    assert problem(SEARCH, arguments).startswith(expected)


def test_a_huge_argument_does_not_make_a_huge_message() -> None:
    message = problem(SEARCH, {"query": "x", "target": ["y" * 1_000_000]})
    assert len(message) < 400


def test_a_schema_listed_again_is_not_checked_again() -> None:
    """A meta-schema check takes milliseconds on the event loop: a relisting costs none."""
    reordered = dict(reversed(list(copy.deepcopy(SEARCH).items())))
    assert ToolSchema.load(reordered) is ToolSchema.load(SEARCH)


def test_a_schema_without_a_type_is_taken_as_an_object_schema() -> None:
    schema = ToolSchema.load({"properties": {"a": {"type": "integer"}}, "required": ["a"]})
    assert schema.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
    }
    assert schema.check({"a": 1}) == {"a": 1}
    with pytest.raises(InvalidArguments):
        schema.check({})


def test_the_parameters_sent_are_the_schema_as_given() -> None:
    assert ToolSchema.load(SEARCH).parameters == SEARCH


def test_a_root_combinator_is_checked_here_and_not_sent() -> None:
    """Anthropic refuses a root oneOf/anyOf/allOf: its branches' properties are listed instead."""
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "oneOf": [
            {"properties": {"path": {"type": "string"}}, "required": ["path"]},
            {"properties": {"url": {"type": "string"}}, "required": ["url"]},
        ],
    }
    loaded = ToolSchema.load(schema)
    assert set(loaded.parameters) == {"type", "properties"}
    assert set(loaded.parameters["properties"]) == {"id", "path", "url"}
    assert loaded.check({"path": "a"}) == {"path": "a"}
    with pytest.raises(InvalidArguments):
        loaded.check({"path": "a", "url": "b"})  # Both branches: not exactly one.


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "not valid JSON Schema"),
        ({"type": "object", "required": "a"}, "not valid JSON Schema"),
        ({"type": "string"}, "is for a string, not an object"),
        ([{"type": "object"}], "is an array, not a JSON object"),
        ({"type": "object", "$schema": {"not": "a uri"}}, "not valid JSON Schema"),
    ],
)
def test_a_schema_that_cannot_be_used_is_refused_with_a_reason(schema: Any, reason: str) -> None:
    with pytest.raises(BadSchema, match=reason):
        ToolSchema.load(schema)


def test_a_draft_7_schema_is_checked_by_its_own_draft() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
    }
    loaded = ToolSchema.load(schema)
    assert loaded.check({"n": 1}) == {"n": 1}
    with pytest.raises(InvalidArguments):
        loaded.check({"n": 0})


def test_a_remote_ref_is_never_fetched_and_the_server_checks_the_call() -> None:
    """jsonschema would fetch an http `$ref` (and obey it); here nothing outside is read."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as http:
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{http.server_address[1]}/string.json"
            schema = {"type": "object", "properties": {"a": {"$ref": url}}}
            assert ToolSchema.load(schema).check({"a": 1}) == {"a": 1}  # Not a string: not read.
        finally:
            http.shutdown()
            thread.join()
    assert asked == []


def test_a_pattern_is_the_servers_to_check_so_a_catastrophic_one_holds_nothing_up() -> None:
    """Python's `re` backtracks, holding the GIL: `^(a+)+$` on 40 a's and a "!" takes hours.

    Checked in a process of its own, killed if it does not answer: a thread
    could not even be waited for.
    """
    check = (
        "from chatui.mcp.schema import ToolSchema\n"
        "schema = {'type': 'object', 'properties': {'a': {'type': 'string', "
        "'pattern': '^(a+)+$'}}}\n"
        "print(ToolSchema.load(schema).check({'a': 'a' * 40 + '!'}) == {'a': 'a' * 40 + '!'})"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "True\n", done.stderr


@pytest.mark.parametrize("pattern", [r"^\p{L}+$", r"^(?<year>\d{4})$"])
def test_a_pattern_python_cannot_read_leaves_the_tool_in(pattern: str) -> None:
    """Patterns are ECMA-262's; one Python's `re` reads otherwise is no reason to drop a tool."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    assert ToolSchema.load(schema).check({"a": "x"}) == {"a": "x"}
