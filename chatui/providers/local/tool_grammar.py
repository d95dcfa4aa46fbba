"""A GBNF grammar that holds a local model's tool calls to the tools' JSON schemas.

A call is written as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(`tool_markup` parses it). The grammar allows one to four such calls, each
naming an offered tool with arguments that fit its schema; the schemas
become GBNF through llama-cpp-python's own converter. It is used when the
reply must be tool calls (`local.tool_choice = "required"`): a small base
model, like the bundled default, writes valid calls only under it.

It is not used for "auto": llama.cpp's lazy grammar, which would wake when
a call starts, matches its trigger against everything written so far at
every token, and a 1,000-token reply took 23 s instead of 1 s on the tiny
test model. Calls written freely are validated against the schemas before
anything runs.

A schema's references (`$ref` to its own `$defs`, say, as MCP servers' schemas
have) are resolved within that schema, on a copy: the converter rewrites them
in place, and the specs are sent as they are on every request. A schema the
converter cannot follow (a reference outside it) holds that tool's arguments
to being an object, no more; the registry checks them before any call.

The converter spells bounds out: `maxLength: 1000000` becomes a million
optional characters, 8 MB of grammar built on every request (an MCP
server's `10**9`, 8 GB). So a bound over `BOUND_LIMIT` (a length, a count of
items or properties, a pattern's repeat) is left out of the copy the
grammar is made from; the registry checks the others before any call, and
a pattern is the server's to check.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar, SchemaConverter

from chatui.providers.base import ProviderError, ToolSpec
from chatui.providers.local.tool_markup import OPEN

MAX_CALLS = 4  # Calls in one reply.
ROOT = "root"
ANY_OBJECT: dict[str, Any] = {"type": "object"}  # Arguments of a schema it cannot follow.
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}  # A tool without a schema.
BOUND_LIMIT = 1000  # A bound the grammar holds to, at most (see the module docstring).
BOUNDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class ToolGrammar(LlamaGrammar):
    """The grammar of a reply made of tool calls."""

    def __init__(self, text: str) -> None:
        super().__init__(_grammar=text)

    def sampler(self, vocab: llama_cpp.llama_vocab_p) -> llama_cpp.llama_sampler_p:
        """A new llama.cpp grammar sampler; ProviderError if the grammar does not compile."""
        sampler: llama_cpp.llama_sampler_p = llama_cpp.llama_sampler_init_grammar(
            vocab, self._grammar.encode(), ROOT.encode()
        )
        if not sampler:
            raise ProviderError("the tool-call grammar does not compile (a tool's schema?)")
        return sampler


def tool_grammar(tools: Sequence[ToolSpec]) -> ToolGrammar:
    """The grammar of one to `MAX_CALLS` calls of `tools`."""
    converter = SchemaConverter(
        prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    names = []
    for n, tool in enumerate(tools):
        parameters = _bounded(copy.deepcopy(tool.parameters or NO_ARGUMENTS))
        try:
            arguments = converter.resolve_refs(parameters, f"tool {n} arguments")
            names.append(converter.visit(_call(tool.name, arguments), f"tool-{n}"))
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError):
            names.append(converter.visit(_call(tool.name, ANY_OBJECT), f"tool-{n}"))
    alternatives = " | ".join(names)
    rules = [
        converter.format_grammar(),
        f"{ROOT} ::= call ( call-gap call ){{0,{MAX_CALLS - 1}}}",
        f'call ::= {json.dumps(OPEN)} "\\n"? ( {alternatives} ) "\\n"? "</tool_call>"',
        "call-gap ::= [ \\n]{0,2}",
    ]
    return ToolGrammar("\n".join(rules))


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The schema of one call of the tool `name`, with `arguments` (references resolved)."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (a copy) without its bounds over `BOUND_LIMIT`, changed in place."""
    waiting: list[Any] = [schema]
    while waiting:
        node = waiting.pop()
        if isinstance(node, list):
            waiting += node
            continue
        if not isinstance(node, dict):
            continue
        for bound in BOUNDS:
            if isinstance(node.get(bound), int | float) and node[bound] > BOUND_LIMIT:
                del node[bound]
        pattern = node.get("pattern")
        if isinstance(pattern, str) and any(
            int(count or 0) > BOUND_LIMIT for found in _REPEAT.findall(pattern) for count in found
        ):
            del node["pattern"]
        waiting += node.values()
    return schema
