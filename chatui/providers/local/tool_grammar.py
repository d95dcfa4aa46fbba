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
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar, SchemaConverter

from chatui.providers.base import ProviderError, ToolSpec
from chatui.providers.local.tool_markup import OPEN

MAX_CALLS = 4  # Calls in one reply.
ROOT = "root"
ANY_OBJECT: dict[str, Any] = {"type": "object"}  # Arguments of a schema it cannot follow.


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
        parameters = copy.deepcopy(tool.parameters) or {"type": "object", "properties": {}}
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
