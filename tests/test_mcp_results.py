"""An MCP `CallToolResult` as chatui's tool output: literal, capped text; binary summarised.

What a server returns is untrusted: its text is kept as it is (the screen
shows it through `visible()`, never as markup), cut at `tools.output_limit`
with a note, and its images and other binary content are summarised ("[image/png,
68 B]") with the image itself kept, within a size, for the APIs that take it.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import mcp_types as mt
import pytest

from chatui.mcp.results import IMAGE_COUNT, IMAGE_LIMIT, tool_output
from chatui.messages import Attachment, ToolResult
from chatui.redact import Redactor, current_redactor
from chatui.store import Store
from tests.support.mcp_content_server import png

LIMIT = 1_000
HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07[bold red]markup[/] **md** <b>x</b>\x9b31m\u202e"


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 100 + b"\xff\xd9"


def result(*content: Any, structured: Any = None, error: bool = False) -> mt.CallToolResult:
    return mt.CallToolResult(content=list(content), structured_content=structured, is_error=error)


def text(value: str) -> mt.TextContent:
    return mt.TextContent(text=value)


def image(data: bytes | str, mime: str = "image/png") -> mt.ImageContent:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return mt.ImageContent(data=encoded, mime_type=mime)


def test_text_is_kept_literally_control_sequences_and_markup_included() -> None:
    output = tool_output(result(text(HOSTILE), text("second block")), limit=LIMIT)
    assert output.content == f"{HOSTILE}\nsecond block"
    assert output.state == "ok"
    assert output.attachments == [] and output.structured is None


def test_a_huge_result_is_cut_at_the_limit_with_a_note_of_what_was_cut() -> None:
    huge = "x" * 5_000_000
    output = tool_output(result(text(huge), structured={"result": huge}), limit=LIMIT)
    kept, _, note = output.content.partition("\n[")
    assert kept == "x" * LIMIT
    assert "5,000,000 characters" in note and f"first {LIMIT:,}" in note
    assert output.structured is None  # Too big to keep: dropped, and said so.
    assert "structured content" in output.content
    assert len(output.content) < LIMIT + 400


def test_an_image_is_summarised_and_kept_for_the_models_that_take_it() -> None:
    picture = png(2, 2)
    output = tool_output(result(text("The chart:"), image(picture)), limit=LIMIT)
    assert output.content == f"The chart:\n[image/png, {len(picture)} B]"
    assert output.attachments == [
        Attachment("image/png", len(picture), base64.b64encode(picture).decode())
    ]


def test_an_image_of_another_type_than_it_says_is_kept_as_what_it_is() -> None:
    output = tool_output(result(image(JPEG, "image/png")), limit=LIMIT)
    assert output.content == f"[image/jpeg, {len(JPEG)} B]"
    assert output.attachments[0].mime_type == "image/jpeg"


@pytest.mark.parametrize(
    ("block", "summary"),
    [
        (image("not base64!!"), "[image/png: its data is not valid base64]"),
        (image(b"II*\x00" + b"\x00" * 60, "image/tiff"), "[image/tiff, 64 B; not sent to the"),
        (image(b"hello, world", "image/png"), "[image/png, 12 B; not sent to the"),
        (
            mt.AudioContent(data=base64.b64encode(b"RIFF" * 300).decode(), mime_type="audio/wav"),
            "[audio/wav, 1.2 kB]",
        ),
    ],
)
def test_binary_content_no_api_takes_is_only_summarised(block: Any, summary: str) -> None:
    output = tool_output(result(block), limit=LIMIT)
    assert output.content.startswith(summary)
    assert all(a.data == "" for a in output.attachments)


def test_an_image_too_large_to_send_is_summarised_and_not_kept() -> None:
    data = "AAAA" * 1_333_334  # Valid base64 of 4,000,002 bytes, never decoded.
    assert IMAGE_LIMIT < 4_000_002
    output = tool_output(result(image(data)), limit=LIMIT)
    assert output.content == "[image/png, 4.0 MB; not sent to the model: larger than 3.9 MB]"
    assert output.attachments == [Attachment("image/png", 4_000_002, "")]


def test_an_image_after_a_huge_text_is_still_summarised() -> None:
    picture = png(1, 1)
    output = tool_output(result(text("y" * 50_000), image(picture)), limit=LIMIT)
    assert output.content.endswith(f"[image/png, {len(picture)} B]")
    assert output.attachments[0].data


def test_resources_are_summarised_with_embedded_text_included() -> None:
    link = mt.ResourceLink(
        name="report", uri="file:///tmp/report.pdf", mime_type="application/pdf", size=12_345
    )
    embedded_text = mt.EmbeddedResource(
        resource=mt.TextResourceContents(uri="memo://1", mime_type="text/plain", text="hello")
    )
    embedded_blob = mt.EmbeddedResource(
        resource=mt.BlobResourceContents(
            uri="blob://2", mime_type="application/zip", blob=base64.b64encode(b"z" * 2000).decode()
        )
    )
    output = tool_output(result(link, embedded_text, embedded_blob), limit=LIMIT)
    assert output.content.splitlines() == [
        "[resource link report: file:///tmp/report.pdf, application/pdf, 12.3 kB]",
        "[resource memo://1, text/plain, 5 characters]",
        "hello",
        "[resource blob://2, application/zip, 2.0 kB]",
    ]


def test_is_error_makes_the_call_failed() -> None:
    output = tool_output(result(text("Error executing tool boom"), error=True), limit=LIMIT)
    assert (output.state, output.content) == ("error", "Error executing tool boom")


def test_structured_content_is_kept_and_stands_in_for_missing_text() -> None:
    data = {"rows": [{"id": 1, "name": "\x1b[31mred"}], "total": 1}
    with_text = tool_output(result(text("1 row"), structured=data), limit=LIMIT)
    assert (with_text.content, with_text.structured) == ("1 row", data)
    alone = tool_output(result(structured=data), limit=LIMIT)
    assert json.loads(alone.content) == data and alone.structured == data


def test_an_empty_result_says_so() -> None:
    assert tool_output(result(), limit=LIMIT).content == "[The tool returned no content.]"


def test_a_key_a_server_echoes_is_masked_in_the_text_and_the_structure() -> None:
    secret = "sk-test-4f9a2c7e1b8d6053aa71c0de99f1e2b3"
    token = current_redactor.set(Redactor([secret]))
    try:
        output = tool_output(result(text(f"key={secret}"), structured={"k": secret}), limit=LIMIT)
    finally:
        current_redactor.reset(token)
    assert secret[8:16] not in output.content and output.content == "key=***"
    assert output.structured == {"k": "***"}


def test_the_output_is_stored_and_read_back_as_it_was(store: Store) -> None:
    picture = png(3, 1)
    output = tool_output(
        result(text(HOSTILE), image(picture), structured={"n": [1, 2.5, None, "x"]}), limit=LIMIT
    )
    conversation = store.create_conversation()
    item = ToolResult(
        "call_1",
        "srv__draw",
        output.content,
        output.state,
        attachments=output.attachments,
        structured=output.structured,
    )
    store.save_item(conversation.id, item)
    [loaded] = store.load_conversation(conversation.id).items
    assert loaded == item
    assert isinstance(loaded, ToolResult) and loaded.attachments[0].data == (
        base64.b64encode(picture).decode()
    )


def test_a_key_in_a_binary_blocks_type_is_masked_in_the_text_and_the_attachments() -> None:
    secret = "sk-ant-api03-Qx7Vb2LmN9pR4tZk8WcYd3Hf"
    audio = mt.AudioContent(data="AAAA", mime_type=f"audio/{secret}")
    token = current_redactor.set(Redactor([secret]))
    try:
        output = tool_output(result(audio, image(png(1, 1), f"Image/X-{secret}")), limit=LIMIT)
    finally:
        current_redactor.reset(token)
    stored = output.content + repr(output.attachments)
    for start in range(0, len(secret) - 8):  # Whole or in part, in any case.
        assert secret[start : start + 8].lower() not in stored.lower()
    # The image is kept as what its bytes are; the audio's type was not one.
    assert [a.mime_type for a in output.attachments] == ["application/octet-stream", "image/png"]


@pytest.mark.parametrize("mime", ["image/png\x1b[2J", "[bold]image/png[/]", "image/pn g", ""])
def test_a_binary_blocks_type_that_is_not_a_mime_type_is_not_kept(mime: str) -> None:
    output = tool_output(result(mt.AudioContent(data="AAAA", mime_type=mime)), limit=LIMIT)
    assert output.content == "[application/octet-stream, 3 B]"
    assert output.attachments == [Attachment("application/octet-stream", 3)]


def test_thousands_of_binary_blocks_keep_the_result_near_its_limit() -> None:
    picture = png(1, 1)
    blocks = [image(picture)] * 10_000
    for content in ([text("x" * 5_000), *blocks], blocks):
        output = tool_output(result(*content), limit=LIMIT)
        assert len(output.content) < 3 * LIMIT  # The cut text, 20 summaries and the count.
        assert "more binary blocks" in output.content.splitlines()[-1]
        kept = [a for a in output.attachments if a.data]
        assert len(kept) == IMAGE_COUNT  # The rest are described, a few of them kept so.
        assert len(output.attachments) <= 2 * IMAGE_COUNT


def test_a_result_keeps_the_data_of_as_many_images_as_a_request_takes() -> None:
    picture = png(1, 1)
    output = tool_output(result(*[image(picture)] * (IMAGE_COUNT + 5)), limit=100_000)
    assert [bool(a.data) for a in output.attachments] == [True] * IMAGE_COUNT + [False] * 5
    lines = output.content.splitlines()
    refused = f"; not sent to the model: a result sends at most {IMAGE_COUNT} images"
    assert lines[:IMAGE_COUNT] == [f"[image/png, {len(picture)} B]"] * IMAGE_COUNT
    assert lines[IMAGE_COUNT:] == [f"[image/png, {len(picture)} B{refused}]"] * 5


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x01\x22\x00"
    sof += b"\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda\x00\x02" + b"\x00" * 10 + b"\xff\xd9"


def webp(width: int, height: int) -> bytes:
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + size
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@pytest.mark.parametrize("make", [png, gif, jpeg, webp])
def test_an_image_larger_than_the_api_takes_on_a_side_is_summarised_and_not_kept(
    make: Any,
) -> None:
    wide, tall, fits = make(8001, 1), make(1, 8001), make(8000, 2)
    output = tool_output(result(image(wide), image(tall), image(fits)), limit=LIMIT)
    mime = output.attachments[2].mime_type
    assert [bool(a.data) for a in output.attachments] == [False, False, True]
    assert output.content.splitlines()[:2] == [
        f"[{mime}, {_size(len(wide))}; not sent to the model: 8001×1 pixels, over 8000 on a side]",
        f"[{mime}, {_size(len(tall))}; not sent to the model: 1×8001 pixels, over 8000 on a side]",
    ]


def _size(size: int) -> str:
    return f"{size} B" if size < 1000 else f"{size / 1000:.1f} kB"


def test_an_image_after_many_audio_blocks_is_still_kept() -> None:
    audio = mt.AudioContent(data="AAAA", mime_type="audio/wav")
    picture = png(1, 1)
    output = tool_output(result(*[audio] * 30, image(picture)), limit=100_000)
    assert output.content.splitlines()[-1] == f"[image/png, {len(picture)} B]"
    assert [a for a in output.attachments if a.data] == [
        Attachment("image/png", len(picture), base64.b64encode(picture).decode())
    ]
    assert len(output.attachments) <= 2 * IMAGE_COUNT


@pytest.mark.parametrize("make", [png, gif, jpeg, webp])
def test_an_image_cut_short_is_summarised_and_not_kept(make: Any) -> None:
    """The API refuses an image it cannot decode, and the history would send it every time."""
    whole = make(4, 4)
    output = tool_output(result(image(whole), image(whole[:-3])), limit=LIMIT)
    mime = output.attachments[0].mime_type
    assert [bool(a.data) for a in output.attachments] == [True, False]
    assert output.content.splitlines()[1] == (
        f"[{mime}, {len(whole) - 3} B; not sent to the model: its data ends before the image does]"
    )
