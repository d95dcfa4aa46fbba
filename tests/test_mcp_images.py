"""A tool's image goes to the models that take one in a tool result; the others get its summary.

Anthropic takes images in a `tool_result` (PNG, JPEG, GIF, WebP); the
OpenAI-compatible servers and the local model get the text, which already
says what the image was ("[image/png, 68 B]"). The wire servers refuse what
the real APIs refuse, so each request here is checked as the API would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chatui.history import ChatMessage, ToolCall, build_history
from chatui.messages import (
    Attachment,
    ModelResponse,
    ResponseState,
    TextPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
)
from chatui.providers.anthropic_messages import to_anthropic_messages
from chatui.providers.base import ToolSpec
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.providers.openai_chat import to_openai_messages
from chatui.store import Store
from chatui.tools.registry import CallContext, ToolOutput, ToolRegistry
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.mcp_content_server import png
from tests.support.remote import anthropic_at, openai_at, request, settings
from tests.support.turns import make_turn, stored
from tests.support.wire import WireServer

PNG = png(1, 1)
DATA = base64.b64encode(PNG).decode()
SUMMARY = f"The chart:\n[image/png, {len(PNG)} B]"
CHART = Attachment("image/png", len(PNG), DATA)


def history(*attachments: Attachment, content: str = SUMMARY) -> list[ChatMessage]:
    return [
        ChatMessage("user", "Draw it."),
        ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "srv__chart", "{}"),)),
        ChatMessage("tool", content, tool_call_id="c1", name="srv__chart", attachments=attachments),
        ChatMessage("user", "Describe it."),
    ]


def image_block(data: str = DATA, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


@pytest.fixture
def anthropic_server() -> Iterator[WireServer]:
    with WireServer(validate=aw.validate) as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as server:
        yield server


def test_a_tool_results_attachments_go_with_its_history_message() -> None:
    call = ToolCallPart("c1", "srv__chart", "{}", complete=True)
    response = ModelResponse("p", "m", parts=[call], state=ResponseState.COMPLETE)
    items = [
        UserPrompt("Draw it."),
        response,
        ToolResult("c1", "srv__chart", SUMMARY, attachments=[CHART]),
    ]
    tool_message = build_history(items)[-1]
    assert (tool_message.role, tool_message.content) == ("tool", SUMMARY)
    assert tool_message.attachments == (CHART,)


async def test_anthropic_gets_the_image_in_the_tool_result_and_accepts_it(
    anthropic_server: WireServer,
) -> None:
    anthropic_server.play(aw.reply("A black pixel."))
    await request(anthropic_at(anthropic_server.base_url), history(CHART))
    [sent] = anthropic_server.requests
    assert sent.refused is None
    result = sent.body["messages"][2]["content"][0]
    assert result["type"] == "tool_result"
    assert result["content"] == [{"type": "text", "text": SUMMARY}, image_block()]


async def test_openai_gets_the_summary_only(openai_server: WireServer) -> None:
    openai_server.play(ow.reply("An image, it says."))
    await request(openai_at(openai_server.base_url), history(CHART))
    [sent] = openai_server.requests
    assert sent.refused is None
    tool = next(m for m in sent.body["messages"] if m["role"] == "tool")
    assert tool["content"] == SUMMARY
    assert DATA not in json.dumps(sent.body)


def test_the_local_model_gets_the_summary_only() -> None:
    prompt = ChatFormat(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>").render(
        history(CHART), [ToolSpec("srv__chart", "Draws", {"type": "object"})]
    )
    assert f"<tool_response>\n{SUMMARY}\n</tool_response>" in prompt
    assert DATA not in prompt


def test_an_attachment_without_data_or_of_a_type_anthropic_refuses_goes_as_text() -> None:
    kept_out = (Attachment("audio/wav", 1200), Attachment("image/tiff", 64, DATA))
    _, messages = to_anthropic_messages(history(*kept_out))
    assert messages[2]["content"][0]["content"] == SUMMARY


def test_the_images_of_one_result_keep_their_order() -> None:
    gif = base64.b64encode(b"GIF89a" + b"\x00" * 20).decode()
    second = Attachment("image/gif", 26, gif)
    _, messages = to_anthropic_messages(history(CHART, second))
    content = messages[2]["content"][0]["content"]
    assert content[1:] == [image_block(), image_block(gif, "image/gif")]
    assert aw.validate({"max_tokens": 1, "messages": messages}) is None


def test_an_image_result_with_no_text_sends_no_blank_text_block() -> None:
    _, messages = to_anthropic_messages(history(CHART, content=" "))
    assert messages[2]["content"][0]["content"] == [image_block()]
    assert aw.validate({"max_tokens": 1, "messages": messages}) is None


def test_only_the_newest_images_that_fit_a_request_are_sent() -> None:
    """The API takes a request of 32 MB at most: older images go as their summary alone."""
    big = Attachment("image/png", 3_000_000, DATA + "A" * (4_000_000 - len(DATA)))
    turns: list[ChatMessage] = [ChatMessage("user", "Draw.")]
    for n in range(8):
        turns += [
            ChatMessage("assistant", "", tool_calls=(ToolCall(f"c{n}", "srv__chart", "{}"),)),
            ChatMessage("tool", SUMMARY, tool_call_id=f"c{n}", attachments=(big,)),
        ]
    _, messages = to_anthropic_messages(turns)
    results = [b for m in messages for b in m["content"] if b["type"] == "tool_result"]
    sent = [isinstance(result["content"], list) for result in results]
    assert sent == [False, False, True, True, True, True, True, True]  # 6 x 4 MB, the newest.


@pytest.mark.parametrize(
    ("block", "refusal"),
    [
        (image_block(media_type="image/bmp"), "media_type"),
        (image_block(media_type="image/jpeg"), "does not match the provided media type"),
        (image_block(data="not base64!"), "base64"),
        (image_block(data=base64.b64encode(b"\x89PNG\r\n\x1a\n" * 700_000).decode()), "5 MB"),
        ({"type": "text", "text": " "}, "non-whitespace"),
        ({"type": "tool_use", "id": "x", "name": "y", "input": {}}, "tool_result content"),
    ],
)
def test_the_anthropic_wire_refuses_tool_result_content_the_api_refuses(
    block: dict[str, Any], refusal: str
) -> None:
    _, messages = to_anthropic_messages(history())
    messages[2]["content"][0]["content"] = [{"type": "text", "text": "ok"}, block]
    refused = aw.validate({"max_tokens": 1, "messages": messages})
    assert refused is not None and refusal in refused["error"]["message"]


def test_the_openai_wire_refuses_an_image_in_a_tool_message() -> None:
    messages = to_openai_messages(history())
    tool = next(m for m in messages if m["role"] == "tool")
    tool["content"] = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{DATA}"}}]
    refused = ow.validate({"model": "m", "messages": messages})
    assert refused is not None and "role 'tool' contains an image" in refused["error"]["message"]


@pytest.mark.parametrize(
    ("tool", "refusal"),
    [
        ({"name": "srv.tool"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"input_schema": {"properties": {}}}, "input_schema.type"),
        ({"input_schema": {"type": "object", "oneOf": [{}, {}]}}, "at the top level"),
    ],
)
def test_the_anthropic_wire_refuses_tools_the_api_refuses(
    tool: dict[str, Any], refusal: str
) -> None:
    spec = {"name": "srv__tool", "description": "d", "input_schema": {"type": "object"}} | tool
    body = {"max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "tools": [spec]}
    refused = aw.validate(body)
    assert refused is not None and refusal in refused["error"]["message"]


@pytest.mark.parametrize(
    ("function", "refusal"),
    [
        ({"name": "srv/tool"}, "function.name"),
        ({"description": "d" * 1025}, "maximum length 1024"),
        ({"parameters": {"type": "string"}}, 'type: "object"'),
    ],
)
def test_the_openai_wire_refuses_tools_the_api_refuses(
    function: dict[str, Any], refusal: str
) -> None:
    spec = {"name": "srv__tool", "description": "d", "parameters": {"type": "object"}} | function
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": spec}],
    }
    refused = ow.validate(body)
    assert refused is not None and refusal in refused["error"]["message"]


class Chart:
    """A tool that returns an image, as an MCP tool's output does."""

    name = "srv__chart"
    needs_approval = False
    timeout = 5.0
    spec = ToolSpec("srv__chart", "Draws a chart.", {"type": "object", "properties": {}})

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments

    async def call(self, arguments: dict[str, Any], context: CallContext) -> ToolOutput:
        return ToolOutput(SUMMARY, attachments=[CHART], structured={"points": 1})


async def test_a_turn_stores_the_image_and_sends_it_to_anthropic_next(
    anthropic_server: WireServer, store: Store
) -> None:
    anthropic_server.play(
        [*aw.start(), *aw.tool_block(0, "toolu_1", "srv__chart", "{}"), *aw.ending("tool_use")],
        aw.reply("A black pixel."),
    )
    provider = anthropic_at(anthropic_server.base_url)
    turn, _ = make_turn(store, provider, tools=ToolRegistry([Chart()]), settings=settings())

    await turn.run()

    [result] = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    assert (result.attachments, result.structured) == ([CHART], {"points": 1})
    first, second = anthropic_server.requests
    assert first.refused is None and second.refused is None
    assert second.body["messages"][2]["content"][0]["content"][1] == image_block()
    assert any(isinstance(p, TextPart) for p in stored(store, turn)[-1].parts)
