"""Render provider-neutral history into a local model's prompt text.

A GGUF's own `tokenizer.chat_template` (Jinja2, rendered in a sandbox) is used
when it has one, else the Gemma turn format, which the bundled default model
expects. Tools are passed to the template as `tools`, the way Hugging Face
templates take them, so templates that know tool calling can render them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError
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


class ChatFormat:
    """A compiled chat template and the special tokens it refers to."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(template)
        except TemplateError as error:
            raise ProviderError(f"the chat template does not compile: {error}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt text for `messages`, ending where the model's reply begins."""
        try:
            return self._template.render(
                messages=[_message_dict(m) for m in messages],
                tools=[_tool_dict(t) for t in tools] or None,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as error:
            raise ProviderError(f"the chat template failed: {error}") from None


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _json_or_text(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
        data["name"] = message.name
    return data


def _tool_dict(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _raise(message: str) -> None:
    raise TemplateError(message)
