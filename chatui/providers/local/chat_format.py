"""Render provider-neutral history into a local model's prompt.

A GGUF's own `tokenizer.chat_template` (Jinja2, rendered in a sandbox) is used
when it has one, else the Gemma turn format, which the bundled default model
expects. Tools are passed to the template as `tools`, the way Hugging Face
templates take them, so templates that know tool calling can render them.

Only the template's own markup may become the model's special tokens (turn
markers like `<start_of_turn>`). Everything the template is given to show
(message contents, the model's calls, tool results, the tools' specs) comes
out as text, whatever it spells: a file that contains `<end_of_turn>` must
not open a turn of its own, and neither may a property name in the schema
of a tool from someone's MCP server. So each such string is bracketed by
markers that nothing else can contain while the template renders, and the
result is a `Prompt`: the text, split into the template's pieces and the
contents'.

A Continue renders the history before the reply that was cut short, with the
generation prompt, and appends that reply's text as a content: the model
goes on from its last character, and whatever the reply spells stays text.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from jinja2 import TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatui.history import ChatMessage
from chatui.providers.base import ProviderError, ToolSpec

GEMMA_TEMPLATE = """\
{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}
{% set prefix = messages[0]['content'] + '\n\n' %}
{% set messages = messages[1:] %}
{% else %}
{% set prefix = '' %}
{% endif %}
{% if tools %}
{% set ns = namespace(text='You can call these tools:\n') %}
{% for tool in tools %}
{% set f = tool['function'] %}
{% set ns.args = [] %}
{% set ns.notes = '' %}
{% set required = f['parameters'].get('required', []) %}
{% for name, spec in f['parameters'].get('properties', {}).items() %}
{% set kind = (spec['enum'] | tojson) if 'enum' in spec else spec.get('type', 'value') %}
{% set ns.args = ns.args + [name ~ ('' if name in required else '?') ~ ': ' ~ kind] %}
{% if spec.get('description') %}
{% set ns.notes = ns.notes ~ '    ' ~ name ~ ': ' ~ spec['description'] ~ '\n' %}
{% endif %}
{% endfor %}
{% set ns.text = ns.text ~ '- ' ~ f['name'] ~ '(' ~ (ns.args | join(', ')) ~ '): '
    ~ f['description'] ~ '\n' ~ ns.notes %}
{% endfor %}
{% set prefix = prefix + ns.text
    + '\nTo call tools, reply with only this, once for each call:\n'
    + '<tool_call>\n{"name": "the tool name", "arguments": {"argument": "value"}}\n'
    + '</tool_call>\nTheir results come back in <tool_response> blocks.\n\n' %}
{% endif %}
{% for message in messages %}
<start_of_turn>{{ 'model' if message['role'] == 'assistant' else 'user' }}
{{ prefix if loop.first else '' }}
{%- if message['role'] == 'tool' %}
<tool_response>
{{ message['content'] }}
</tool_response>
{%- else %}
{{ message['content'] }}
{%- endif %}
{% for call in message.get('tool_calls', []) %}
<tool_call>
{{ call['function'] | tojson }}
</tool_call>
{% endfor %}
<end_of_turn>
{% endfor %}
{% if add_generation_prompt %}
<start_of_turn>model
{% endif %}"""
"""The Gemma turn format; a system prompt, and the tools offered, join the first user turn."""


class Prompt(str):
    """Prompt text that remembers which parts of it the template wrote.

    `segments` are `(text, from_template)` pairs, in order; joined, their texts
    are the string itself. Only text from the template may become special
    tokens. (A plain `str` prompt has no segments: it is all template text.)
    """

    segments: tuple[tuple[str, bool], ...]

    def __new__(cls, segments: Sequence[tuple[str, bool]]) -> Prompt:
        merged: list[tuple[str, bool]] = []
        for text, from_template in segments:
            if merged and merged[-1][1] == from_template:
                merged[-1] = (merged[-1][0] + text, from_template)
            elif text:
                merged.append((text, from_template))
        prompt = super().__new__(cls, "".join(text for text, _ in merged))
        prompt.segments = tuple(merged)
        return prompt


class ChatFormat:
    """A compiled chat template and the special tokens it refers to."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        try:
            self._template = _Environment().from_string(template)
        except TemplateError as error:
            raise ProviderError(f"the chat template does not compile: {error}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> Prompt:
        """The prompt for `messages`, ending where the model's reply begins.

        Contents are bracketed while the template renders, so it still sees
        their text; a template that cuts them apart (a slice, a split) is
        rendered again with each content as one opaque marker instead.
        """
        return self._render_prompt(messages, tools)

    def render_continue(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> tuple[Prompt, Prompt]:
        """The prompt that continues the last message, the model's reply cut short.

        Returns the prompt and its head: `messages` but the last, rendered
        with the generation prompt. The prompt is the head, then the reply's
        text as a content, never the template's: rendered as a message, the
        reply would be closed by an end of turn, and some templates trim it.
        """
        if not messages or messages[-1].role != "assistant":
            raise ProviderError("there is no reply of the model's to continue")
        head = self._render_prompt(messages[:-1], tools)
        return Prompt([*head.segments, (messages[-1].content, False)]), head

    def _render_prompt(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> Prompt:
        for atomic in (False, True):
            contents = _Contents(atomic=atomic)
            segments = contents.split(self._render(messages, tools, contents))
            if segments is not None:
                return Prompt(segments)
        raise ProviderError(
            "the chat template rewrites message contents in a way that cannot be told apart "
            "from its own markup: set local.chat_template to another template"
        )

    def _render(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], mark: Mark
    ) -> str:
        try:
            return self._template.render(
                messages=[_message_dict(m, mark) for m in messages],
                tools=[_tool_dict(t, mark) for t in tools] or None,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as error:
            message = _MARKER.sub("", str(error))
            raise ProviderError(f"the chat template failed: {message}") from None


Mark = Callable[[str], str]
"""Marks a string the template is given to show: its text is content, never markup."""

_OPEN, _CLOSE = "\ue000", "\ue001"  # Private-use characters: a marker's first and last.
_MARKER = re.compile("\ue000([0-9a-f]{16})([\\[\\]#])([0-9]+)\ue001")
_MARKER_SPLIT = re.compile("(\ue000[0-9a-f]{16}[\\[\\]#][0-9]+\ue001)")  # Kept by re.split.
_KIND = 17  # The index of a marker's kind: "[" opens a content, "]" closes it, "#" is one.


class _Contents:
    """The strings a template is given to show, marked so they can be found again.

    Bracketed (the default), a string keeps its text between an opening and
    a closing marker, so the template can still test and trim it; atomic, it
    is replaced by one marker. Markers carry a random nonce: no content can
    spell one.
    """

    def __init__(self, *, atomic: bool) -> None:
        self.atomic = atomic
        self.nonce = secrets.token_hex(8)
        self.texts: list[str] = []
        self._numbers: dict[str, int] = {}

    def __call__(self, text: str) -> str:
        if not text:
            return text  # Nothing to spell, and an empty content stays false to the template.
        n = self._numbers.setdefault(text, len(self.texts))
        if n == len(self.texts):
            self.texts.append(text)
        if self.atomic:
            return self._marker("#", n)
        return self._marker("[", n) + text + self._marker("]", n)

    def _marker(self, kind: str, n: int) -> str:
        return f"{_OPEN}{self.nonce}{kind}{n}{_CLOSE}"

    def split(self, rendered: str) -> list[tuple[str, bool]] | None:
        """`rendered` as (text, from_template) segments; None if the template cut a marker."""
        segments: list[tuple[str, bool]] = []
        opened: list[str] = []
        at = 0
        for match in _MARKER.finditer(rendered):
            nonce, kind, n = match.groups()
            if nonce != self.nonce:
                continue  # A content that spells a marker: it is content.
            segments.append((rendered[at : match.start()], not opened))
            at = match.end()
            if kind == "[":
                opened.append(n)
            elif kind == "]":
                if not opened or opened.pop() != n:
                    return None
            elif opened or int(n) >= len(self.texts):
                return None
            else:
                segments.append((self.texts[int(n)], False))
        segments.append((rendered[at:], not opened))
        if opened:
            return None
        traces = (_OPEN, _CLOSE, self.nonce)  # What a cut, reversed or quoted marker leaves.
        if any(mine and any(t in text for t in traces) for text, mine in segments):
            return None
        return segments


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with `trim` and `str.strip()` that see through content brackets.

    Templates trim contents (`message['content'] | trim`); the whitespace to
    remove is the content's own, inside its brackets.
    """

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self.filters["tojson"] = _tojson
        self.filters["trim"] = lambda value, chars=None: _strip(str(value), chars, "strip")
        self.globals["raise_exception"] = _raise

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
        arguments = [k for k in kwargs if k not in ("_loop_vars", "_block_vars")]  # Jinja's own.
        if isinstance(owner, str) and name in _STRIPS and not arguments and len(args) <= 1:
            return _strip(owner, args[0] if args else None, name)
        return super().call(context, obj, *args, **kwargs)


_STRIPS = ("strip", "lstrip", "rstrip")


def _strip(text: str, chars: str | None, how: str) -> str:
    """`text.<how>(chars)`, where the ends of a bracketed content count as the text's ends."""
    parts = _MARKER_SPLIT.split(text)  # Texts at even indices, markers at odd ones.
    if how != "rstrip":
        _strip_from(parts, range(len(parts)), lambda t: t.lstrip(chars))
    if how != "lstrip":
        _strip_from(parts, range(len(parts) - 1, -1, -1), lambda t: t.rstrip(chars))
    return "".join(parts)


def _strip_from(parts: list[str], order: range, strip: Callable[[str], str]) -> None:
    for i in order:
        if i % 2 == 0:
            parts[i] = strip(parts[i])
            if parts[i]:
                return
        elif parts[i][_KIND] == "#":
            return  # An opaque content: its own ends are not known here.


def _tojson(value: Any, **options: Any) -> str:
    options["ensure_ascii"] = False  # Escaped, a marker would no longer be one.
    return json.dumps(value, **options)


def _message_dict(message: ChatMessage, mark: Mark) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": mark(message.content)}
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": mark(call.id),
                "type": "function",
                "function": {
                    "name": mark(call.name),
                    "arguments": _mark_json(_json_or_text(call.arguments), mark),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = mark(message.tool_call_id)
        data["name"] = mark(message.name) if message.name else message.name
    return data


def _tool_dict(tool: ToolSpec, mark: Mark) -> dict[str, Any]:
    """A tool for the template: every string in its spec, its schema's keys too, is text."""
    return {
        "type": "function",
        "function": {
            "name": mark(tool.name),
            "description": mark(tool.description),
            "parameters": _mark_json(tool.parameters, mark, keep=_SCHEMA_WORDS),
        },
    }


def _mark_json(value: Any, mark: Mark, keep: frozenset[str] = frozenset()) -> Any:
    """`value` with every string in it, keys too, marked as content, save those in `keep`."""
    if isinstance(value, str):
        return value if value in keep else mark(value)
    if isinstance(value, dict):
        return {_mark_json(str(k), mark, keep): _mark_json(v, mark, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark_json(v, mark, keep) for v in value]
    return value


_SCHEMA_WORDS = frozenset(
    {
        # Keywords: templates look them up (`spec['enum']`, `'items' in spec`).
        "$comment", "$defs", "$id", "$ref", "$schema", "additionalItems",
        "additionalProperties", "allOf", "anyOf", "const", "contains", "contentEncoding",
        "contentMediaType", "default", "definitions", "dependencies", "dependentRequired",
        "dependentSchemas", "deprecated", "description", "else", "enum", "examples",
        "exclusiveMaximum", "exclusiveMinimum", "format", "if", "items", "maxContains",
        "maximum", "maxItems", "maxLength", "maxProperties", "minContains", "minimum",
        "minItems", "minLength", "minProperties", "multipleOf", "not", "nullable", "oneOf",
        "pattern", "patternProperties", "prefixItems", "properties", "propertyNames",
        "readOnly", "required", "then", "title", "type", "unevaluatedItems",
        "unevaluatedProperties", "uniqueItems", "writeOnly",
        # Types: templates compare them (`spec['type'] == 'string'`).
        "array", "boolean", "integer", "null", "number", "object", "string",
    }
)  # fmt: skip
"""The JSON schema words a tool's schema is left to spell as markup.

Marked, they would no longer be found or compared equal by a template, and
they are this fixed list's words, not an outsider's: whoever wrote the
schema cannot choose what they spell. Any other string in it is marked."""


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _raise(message: str) -> None:
    raise TemplateError(message)
