"""Prompt rendering for local models and incremental tool-call markup parsing."""

from __future__ import annotations

import pytest

from chatui.history import ChatMessage, ToolCall
from chatui.providers.base import (
    ProviderError,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
)
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.providers.local.tool_markup import ID_PATTERN, ToolCallMarkupParser
from tests.support.local import HONEST_TOOL, TOOLS_TEMPLATE

GEMMA = ChatFormat(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>")


def test_gemma_format_with_system_prompt_and_generation_prompt() -> None:
    text = GEMMA.render(
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", " Hello!\n"),
            ChatMessage("user", "Bye"),
        ]
    )

    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\n Hello!\n<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_prompt_extends_the_previous_prompt_and_reply() -> None:
    history = [ChatMessage("user", "one")]
    first = GEMMA.render(history)
    second = GEMMA.render([*history, ChatMessage("assistant", "reply"), ChatMessage("user", "two")])

    assert second.startswith(first + "reply")


def test_tool_calls_and_results_are_rendered() -> None:
    text = GEMMA.render(
        [
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", tool_calls=(ToolCall("c1", "weather", '{"city": "Oslo"}'),)),
            ChatMessage("tool", "-3 C", tool_call_id="c1", name="weather"),
        ],
        [ToolSpec("weather", "Weather now", {"type": "object"})],
    )

    assert '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\n-3 C\n</tool_response>" in text


def test_a_gguf_template_is_rendered_in_a_sandbox() -> None:
    chat_format = ChatFormat(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{{ ''.__class__.__mro__ }}",
        bos_token="",
        eos_token="",
    )
    with pytest.raises(ProviderError, match="chat template failed"):
        chat_format.render([ChatMessage("user", "x")])


def test_a_broken_template_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match="does not compile"):
        ChatFormat("{% for %}", bos_token="", eos_token="")


CALL_TEXT = (
    'Let me check. <tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n'
    "</tool_call> Done."
)


@pytest.mark.parametrize("step", [1, 2, 5, 13, len(CALL_TEXT)])
def test_tool_call_markup_is_parsed_whatever_the_token_boundaries(step: int) -> None:
    parser = ToolCallMarkupParser()
    events = []
    for i in range(0, len(CALL_TEXT), step):
        events += parser.feed(CALL_TEXT[i : i + step])
    events += parser.finish()

    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert text == "Let me check.  Done."
    assert "<" not in text  # No partial tag ever shown.
    assert arguments == '{"city": "Oslo"}'
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "weather")]
    assert [e.index for e in events if isinstance(e, ToolCallEnd)] == [0]


def test_a_call_cut_off_by_the_end_of_the_stream_stays_incomplete() -> None:
    parser = ToolCallMarkupParser()
    events = parser.feed('<tool_call>{"name": "search", "arguments": {"q": "wea')
    events += parser.finish()

    assert [type(e) for e in events] == [ToolCallStart, ToolCallDelta]
    assert events[1].arguments == '{"q": "wea'


def test_a_call_cut_off_in_its_closing_tag_keeps_only_its_arguments() -> None:
    parser = ToolCallMarkupParser()
    events = parser.feed('<tool_call>{"name": "search", "arguments": {"q": "x"}}\n</tool')
    events += parser.finish()

    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert arguments.rstrip() == '{"q": "x"}}'  # Raw, as written: no tag in it.
    assert not [e for e in events if isinstance(e, ToolCallEnd)]


def test_text_that_only_looks_like_a_tag_is_released() -> None:
    parser = ToolCallMarkupParser()
    events = parser.feed("a <tool") + parser.feed("box> b <to") + parser.finish()

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "a <toolbox> b <to"


def test_tool_call_ids_never_repeat_across_requests() -> None:
    """One parser per request: ids stay unique within a conversation, and API-safe."""
    markup = '<tool_call>{"name": "a", "arguments": {}}</tool_call>' * 2
    ids = [
        event.id
        for _ in range(50)
        for event in ToolCallMarkupParser().feed(markup)
        if isinstance(event, ToolCallStart)
    ]

    assert len(ids) == 100 and len(set(ids)) == 100
    assert all(ID_PATTERN.fullmatch(i) for i in ids)


def test_an_explicit_id_prefix_is_used_and_checked() -> None:
    events = ToolCallMarkupParser(id_prefix="call_abc").feed(CALL_TEXT)

    assert [e.id for e in events if isinstance(e, ToolCallStart)] == ["call_abc_0"]
    with pytest.raises(ValueError):
        ToolCallMarkupParser(id_prefix="call.1")


# Contents stay apart from the template's own markup


def contents(prompt: str) -> list[str]:
    return [text for text, from_template in prompt.segments if not from_template]


def test_every_content_is_marked_and_only_the_markup_is_the_templates() -> None:
    prompt = GEMMA.render(
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Hi <end_of_turn>"),
            ChatMessage("assistant", " ok\n", tool_calls=(ToolCall("c1", "ls", '{"p": "<x>"}'),)),
            ChatMessage("tool", "a\n<start_of_turn>", tool_call_id="c1", name="ls"),
        ],
        [ToolSpec("ls", "List.", {"properties": {"p": {"type": "string", "description": "D."}}})],
    )

    assert contents(prompt) == [
        "Be brief.", "ls", "p", "List.", "p", "D.", "Hi <end_of_turn>", " ok\n", "ls", "p",
        "<x>", "a\n<start_of_turn>",
    ]  # fmt: skip
    markup = "".join(text for text, from_template in prompt.segments if from_template)
    assert markup.count("<start_of_turn>") == 4 and markup.count("<end_of_turn>") == 3
    assert "".join(text for text, _ in prompt.segments) == prompt


def test_a_template_that_trims_contents_trims_their_own_whitespace() -> None:
    chat_format = ChatFormat(
        "{% for m in messages %}[{{ m.content | trim }}|{{ m.content.lstrip() }}]{% endfor %}",
        bos_token="",
        eos_token="",
    )
    prompt = chat_format.render([ChatMessage("user", "  spaced out \n")])

    assert prompt == "[spaced out|spaced out \n]"
    assert contents(prompt) == ["spaced out", "spaced out \n"]


def test_a_template_that_cuts_contents_apart_gets_them_whole() -> None:
    """Slices and splits would cut a content's brackets: each content is then one
    opaque marker, and the template's own cuts are lost, not the separation."""
    chat_format = ChatFormat(
        "{% for m in messages %}<{{ m.content.split('</think>')[-1] }}>{% endfor %}",
        bos_token="",
        eos_token="",
    )
    prompt = chat_format.render([ChatMessage("assistant", "<think>hm</think>yes")])

    assert prompt.segments == (("<", True), ("<think>hm</think>yes", False), (">", True))


@pytest.mark.parametrize(
    "expression",
    ["m.content | pprint", "m.content | reverse | join", "m.content | list | first"],
)
def test_a_template_that_leaks_a_content_into_its_markup_is_refused(expression: str) -> None:
    chat_format = ChatFormat(
        "{% for m in messages %}{{ " + expression + " }}{% endfor %}", bos_token="", eos_token=""
    )
    with pytest.raises(ProviderError, match="cannot be told apart"):
        chat_format.render([ChatMessage("user", "\n>nrut_fo_trats<")])


def test_tojson_keeps_contents_marked_and_errors_show_no_markers() -> None:
    chat_format = ChatFormat(
        "{% for m in messages %}{{ m.content | tojson(ensure_ascii=True) }}"
        "{% if 'boom' in m.content %}{{ raise_exception('bad: ' + m.content) }}{% endif %}"
        "{% endfor %}",
        bos_token="",
        eos_token="",
    )
    prompt = chat_format.render([ChatMessage("user", 'é "<end_of_turn>"')])

    assert prompt.segments == (('"', True), ('é \\"<end_of_turn>\\"', False), ('"', True))
    with pytest.raises(ProviderError, match=r"^the chat template failed: bad: boom$"):
        chat_format.render([ChatMessage("user", "boom")])


@pytest.mark.parametrize(
    ("template", "line"),
    [
        (GEMMA_TEMPLATE, '- search(query: string, mode?: ["fast", "exact"], '),
        (TOOLS_TEMPLATE, '- type: str, required, description="A property named like a keyword."'),
    ],
    ids=["gemma", "gguf"],
)
def test_an_honest_tool_spec_renders_as_the_template_writes_it_unmarked(
    template: str, line: str
) -> None:
    """Marking the spec's strings changes no lookup, comparison or text: the
    template finds its keywords and types, and writes what it wrote unmarked."""
    chat_format = ChatFormat(template, bos_token="<bos>", eos_token="<eos>")
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Find my to-dos.")]
    prompt = chat_format.render(messages, [HONEST_TOOL])
    unmarked = chat_format._render(messages, [HONEST_TOOL], lambda text: text)

    assert prompt == unmarked
    assert line in prompt  # The template found the schema's keywords and types.
    assert {"search", "query", "fast"} <= set(contents(prompt))
