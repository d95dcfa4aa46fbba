"""An MCP server's `CallToolResult` as chatui's `ToolOutput`: what the model and the user get.

Everything a server returns is untrusted. Its text blocks are joined as
they are, never interpreted (the screen shows them through `visible()`, the
store keeps them literally), and cut at `tools.output_limit` characters with
a note saying how much there was: a 5 MB result must neither freeze the
screen nor bloat the store, nor fill the model's context.

Binary content is summarised in the text ("[image/png, 12.3 kB]"), which is
all that the OpenAI-compatible and the local models get. An image of a type
Anthropic takes in a tool result (PNG, JPEG, GIF, WebP, checked by its first
bytes: the API refuses an image that is not what it says), up to a size
whose base64 fits the API's limit, no more than `SIDE_LIMIT` pixels on a
side (read from its header) and not cut short (it ends as its format ends
one), is kept as an `Attachment` with its data: an image the API refuses
would fail every later request of the conversation, as the history sends
it again. At most `IMAGE_COUNT` images of a result, and
`IMAGE_BUDGET` characters of their base64, are kept: no request takes more.
Audio and other images are kept as a summary only. Resource links and
embedded resources are summarised (uri, type, size), an embedded text
included. `isError` makes the call failed. `structuredContent` is kept as
JSON when it fits within the same limit, else dropped with a note; with no
content blocks, its JSON stands in as the text. A result of thousands of
blocks stays near its limit: past the cut, the summaries of
`LOST_SUMMARIES` binary blocks are listed, and how many more there were.

Keys are masked before anything is cut (`chatui.redact`), as the built-in
tools' output is: a server could echo one. A block's MIME type is masked
too, and kept only if it reads as one (`type/subtype`), lower-cased after
the mask (a key lower-cased would no longer be found).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from typing import Any

import mcp_types as mt

from chatui import redact
from chatui.messages import Attachment, byte_size
from chatui.tools.registry import ToolOutput

IMAGE_LIMIT = 3_932_160  # Bytes of one image kept: its base64 fits Anthropic's 5 MiB.
IMAGE_COUNT = 20  # Images of one result kept: a request sends no more (see the Anthropic...
IMAGE_BUDGET = 24_000_000  # ...provider), nor more characters of their base64 than this.
SIDE_LIMIT = 8000  # Pixels on a side of an image kept: Anthropic refuses a larger one.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
NO_CONTENT = "[The tool returned no content.]"
FIELD_LIMIT = 200  # Characters of a MIME type, uri or name in a summary.
LOST_SUMMARIES = 20  # Summaries of binary blocks past the cut that are still listed.
UNKNOWN_TYPE = "application/octet-stream"
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def tool_output(result: mt.CallToolResult, *, limit: int) -> ToolOutput:
    """`result` as the call's output: text capped at `limit` characters, binary summarised."""
    pieces: list[str] = []
    summaries: list[tuple[int, str]] = []  # (index in pieces, summary) of binary content.
    attachments: list[Attachment] = []
    images = _ImageBudget()
    for block in result.content:
        if isinstance(block, mt.TextContent):
            pieces.append(block.text)
        elif isinstance(block, mt.ImageContent | mt.AudioContent):
            summary, attachment = _binary(block, images)
            summaries.append((len(pieces), summary))
            pieces.append(summary)
            bare = sum(not a.data for a in attachments)  # Only described: a few are enough.
            if attachment is not None and (attachment.data or bare < IMAGE_COUNT):
                attachments.append(attachment)
        elif isinstance(block, mt.ResourceLink):
            pieces.append(_link(block))
        elif isinstance(block, mt.EmbeddedResource):
            pieces.extend(_embedded(block.resource))
        else:  # A kind of content newer than this code.
            pieces.append(f"[content of type {_field(str(getattr(block, 'type', '?')))}]")
    structured, as_json, note = _structured(result.structured_content, limit)
    if not pieces and as_json is not None:
        pieces.append(as_json)
    content = _capped(pieces, summaries, limit) if pieces else NO_CONTENT
    if note:
        content = f"{content}\n{note}"
    return ToolOutput(content, "error" if result.is_error else "ok", attachments, structured)


def _capped(pieces: list[str], summaries: list[tuple[int, str]], limit: int) -> str:
    """`pieces` joined by newlines, redacted, cut at `limit` with a note.

    Only `limit` characters and a margin (for a key across the cut) are ever
    joined. The summaries of binary content past the cut follow the note, so
    that the model still learns of every image.
    """
    budget = limit + redact.margin()
    total = sum(map(len, pieces)) + len(pieces) - 1
    taken, used = [], 0
    for piece in pieces:
        if used >= budget:
            break
        taken.append(piece[: budget - used])
        used += len(taken[-1]) + 1
    kept, cut = redact.clip("\n".join(taken), limit)
    if not (cut or total > budget):
        return kept
    starts, at = [], 0
    for piece in pieces:
        starts.append(at)
        at += len(piece) + 1
    lost = [s for n, s in summaries if starts[n] + len(s) > len(kept)]
    listed = [redact.redact(s) for s in lost[:LOST_SUMMARIES]]
    if len(lost) > LOST_SUMMARIES:
        listed.append(f"[… and {len(lost) - LOST_SUMMARIES:,} more binary blocks]")
    note = f"[… cut: the result has {total:,} characters; the first {limit:,} shown]"
    return "\n".join([kept, note, *listed])


class _ImageBudget:
    """How many images of one result, and how much of their base64, are kept so far."""

    def __init__(self) -> None:
        self.count = self.size = 0

    def refusal(self, encoded: int) -> str | None:
        """Why one more image, of `encoded` characters of base64, is not kept; None: it is."""
        if self.count == IMAGE_COUNT:
            return f"a result sends at most {IMAGE_COUNT} images"
        if self.size + encoded > IMAGE_BUDGET:
            return f"its images are over {byte_size(IMAGE_BUDGET)} in all"
        self.count, self.size = self.count + 1, self.size + encoded
        return None


def _binary(
    block: mt.ImageContent | mt.AudioContent, images: _ImageBudget
) -> tuple[str, Attachment | None]:
    """A summary of an image or audio block, and its attachment (None if unreadable)."""
    mime = mime_type(block.mime_type)
    data = "".join(block.data.split())  # Some servers wrap their base64 in lines.
    image = isinstance(block, mt.ImageContent)
    estimated = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
    if estimated > IMAGE_LIMIT:  # Never decoded: it is not kept anyway.
        reason = f"; not sent to the model: larger than {byte_size(IMAGE_LIMIT)}" if image else ""
        return f"[{mime}, {byte_size(estimated)}{reason}]", Attachment(mime, estimated)
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        return f"[{mime}: its data is not valid base64]", None
    size = len(raw)
    if not image:
        return f"[{mime}, {byte_size(size)}]", Attachment(mime, size)
    kind = image_type(raw)
    if kind is None:
        reason = (
            "its data is not a PNG, JPEG, GIF or WebP image"
            if mime in IMAGE_TYPES
            else "it takes only PNG, JPEG, GIF and WebP images"
        )
        summary = f"[{mime}, {byte_size(size)}; not sent to the model: {reason}]"
        return summary, Attachment(mime, size)
    sides = image_size(raw)
    encoded = base64.b64encode(raw).decode()
    if sides is not None and max(sides) > SIDE_LIMIT:
        refusal: str | None = f"{sides[0]}×{sides[1]} pixels, over {SIDE_LIMIT} on a side"
    elif not image_whole(raw, kind):
        refusal = "its data ends before the image does"
    else:
        refusal = images.refusal(len(encoded))
    if refusal is None:
        return f"[{kind}, {byte_size(size)}]", Attachment(kind, size, encoded)
    return f"[{kind}, {byte_size(size)}; not sent to the model: {refusal}]", Attachment(kind, size)


def mime_type(given: str) -> str:
    """A block's MIME type as kept and shown: masked of keys, lower-cased, else `UNKNOWN_TYPE`.

    It is the server's text: a key in it is masked before the case changes
    (after, it would not be found), and anything that is not `type/subtype`
    (control sequences, markup, a mask) is not kept.
    """
    mime = redact.redact(given.strip()).lower()
    return mime if _MIME.fullmatch(mime) else UNKNOWN_TYPE


def image_type(raw: bytes) -> str | None:
    """The MIME type of an image of a type the APIs take, from its first bytes; None if not one."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_whole(raw: bytes, kind: str) -> bool:
    """Whether an image of type `kind` ends as its format ends one (it was not cut short).

    A JPEG may carry a few bytes after its end marker: one within its last
    4 kB is taken as its end.
    """
    if kind == "image/png":
        return raw.endswith(b"IEND\xaeB`\x82")
    if kind == "image/gif":
        return raw.endswith(b";")
    if kind == "image/webp":
        return int.from_bytes(raw[4:8], "little") + 8 <= len(raw)
    return b"\xff\xd9" in raw[-4096:]


def image_size(raw: bytes) -> tuple[int, int] | None:
    """An image's width and height in pixels, from its header; None if it cannot be read."""
    try:
        if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
            return struct.unpack(">II", raw[16:24])
        if raw[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", raw[6:10])
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            return _webp_size(raw)
        if raw.startswith(b"\xff\xd8"):
            return _jpeg_size(raw)
    except (struct.error, IndexError):
        return None
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    chunk = raw[12:16]
    if chunk == b"VP8X":  # Extended: the canvas, 24 bits each, less one.
        return int.from_bytes(raw[24:27], "little") + 1, int.from_bytes(raw[27:30], "little") + 1
    if chunk == b"VP8L" and raw[20] == 0x2F:  # Lossless: 14 bits each, less one.
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and raw[23:26] == b"\x9d\x01\x2a":  # Lossy: 14 bits each.
        width, height = struct.unpack("<HH", raw[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # Start-of-frame markers.


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """The size in a JPEG's start-of-frame segment, found by walking the segments before it."""
    at = 2
    while at + 4 <= len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        if marker == 0xFF:  # Fill byte.
            at += 1
            continue
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", raw[at + 5 : at + 9])
            return width, height
        if marker == 0xDA:  # The scan starts: no frame header before it.
            return None
        at += 2 + int.from_bytes(raw[at + 2 : at + 4], "big")
    return None


def _link(link: mt.ResourceLink) -> str:
    name = f" {_field(link.name)}" if link.name and link.name != link.uri else ""
    details = [_field(link.uri)]
    if link.mime_type:
        details.append(_field(link.mime_type))
    if link.size is not None:
        details.append(byte_size(link.size))
    return f"[resource link{name}: {', '.join(details)}]"


def _embedded(resource: mt.TextResourceContents | mt.BlobResourceContents) -> list[str]:
    details = [_field(resource.uri)]
    if resource.mime_type:
        details.append(_field(resource.mime_type))
    if isinstance(resource, mt.TextResourceContents):
        count = len(resource.text)
        details.append(f"{count:,} character{'' if count == 1 else 's'}")
        return [f"[resource {', '.join(details)}]", resource.text]
    blob = "".join(resource.blob.split())
    details.append(byte_size(len(blob) * 3 // 4 - (len(blob) - len(blob.rstrip("=")))))
    return [f"[resource {', '.join(details)}]"]


def _structured(value: Any, limit: int) -> tuple[Any, str | None, str]:
    """The structured content kept (or None), its JSON (or None), and a note if it was dropped."""
    if value is None:
        return None, None, ""
    try:
        as_json = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None, None, "[The structured content was not JSON, so it was not kept.]"
    if len(as_json) > limit:
        note = (
            f"[The structured content ({len(as_json):,} characters of JSON) was over the "
            f"{limit:,}-character limit, so it was not kept.]"
        )
        return None, as_json, note
    masked = redact.redact(as_json)
    try:
        return (json.loads(masked) if masked != as_json else value), as_json, ""
    except ValueError:  # A mask inside JSON syntax: a key with quotes in it.
        return None, as_json, "[The structured content held a key, so it was not kept.]"


def _field(text: str) -> str:
    return text if len(text) <= FIELD_LIMIT else f"{text[: FIELD_LIMIT - 1]}…"
