"""A conversation as a file: Markdown to read and share, JSON to keep or to process.

Markdown (`to_markdown`) is the shown path, as the screen shows it: the
title, then each prompt ("## You") and each reply ("## Assistant · provider
· model"), with "version 2 of 3" when an item has other versions. A reply
holds its reasoning in a collapsed `<details>` block, its text as the model
wrote it (Markdown), each tool call with its arguments (pretty JSON in a
fenced block) and its result (state, then the content in a fenced block,
then what was attached), and a marker when it did not simply complete
(interrupted, failed with the error, unfinished, continued, stopped at the
token limit).

Everything in it came from outside (model output, tool output, titles,
errors), so none of it may change the document's shape: a fenced block's
fence is longer than any run of backticks in it, a fence left open at the
end of a reply (a reply stopped mid-code) is closed, HTML tags outside code
are escaped (so `</details>` or `<!--` cannot close or swallow what follows),
names and errors are escaped as plain text, and terminal control
characters are made visible (`chatui.sanitize.visible`).

JSON (`to_json`) is the conversation as stored, versions included: one
object, `format` "chatui-conversation", `format_version` 1, and

- `id`, `title`;
- `branched_from`: `{"conversation_id", "title"}` of the conversation it was
  forked from, or null;
- `system_prompt`: its own system prompt, or null (the config's);
- `model`: its own `{"provider", "model"}`, or null (the session's);
- `view_start`: the id of the first item still sent to the model, or null;
- `leaf`: the id of the last item of the shown path, or null;
- `items`: every item in stored order, each `{"parent", "shown", "item"}`:
  the id of the item before it on its path (null for a first item), whether
  it is on the shown path, and the item as the store keeps it
  (`chatui.messages.item_to_dict`; `chatui.messages.item_from_dict` reads it
  back). Versions are the items of one kind that share a parent.

Drafts and queued messages are not exported. Characters that could act on a
terminal (C1 controls, DEL, bidirectional controls, line separators, lone
surrogates) are written as `\\uXXXX` escapes, so the JSON is safe to print
and parses back to exactly what is stored.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from chatui.history import pair_results
from chatui.messages import (
    Attachment,
    Conversation,
    ModelResponse,
    ResponseState,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
    byte_size,
    item_to_dict,
    nests_too_deep,
)
from chatui.sanitize import BIDI_CONTROLS, visible

FORMAT = "chatui-conversation"
FORMAT_VERSION = 1
STEM_CHARS = 48  # Of a file name, at most this much comes from the title.

RESULT_WORDS = {
    "ok": "✓ done",
    "error": "✗ failed",
    "denied": "⊘ denied",
    "cancelled": "■ cancelled by you",
}
CUT_OFF = "✂ cut off before its arguments ended: not run"
NOT_RUN = "no result: not run"
VIEW_START = "▲ Above: no longer sent to the model, whose context was full."

# Blocks only: where code is, and which lines make one paragraph (or heading).
_BLOCKS = MarkdownIt("commonmark")
_BLOCKS.core.ruler.disable(["inline", "text_join"], ignoreInvalid=True)
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # What can start HTML: a tag, a comment, a declaration.
_TICKS = re.compile(r"`+")
_DEFINITION = re.compile(r"\]:")  # May be a link reference definition, which `<` can undo.
_PLAIN = re.compile(r"([\\`*_\[\]<>#|~&])")  # Escaped in text that must stay plain text.
_SLUG = re.compile(r"\w+")
_IN_JSON = re.compile(
    "[\u007f-\u009f\u2028\u2029\ud800-\udfff" + "".join(chr(code) for code in BIDI_CONTROLS) + "]"
)


def to_markdown(conversation: Conversation) -> str:
    """The conversation's shown path as a Markdown document (see the module's docstring)."""
    return markdown_document(markdown_blocks(conversation))


def markdown_document(blocks: Iterable[str]) -> str:
    """The document that `markdown_blocks` makes, one by one (to pause between them)."""
    return "\n\n".join(blocks) + "\n"


def to_json(conversation: Conversation) -> str:
    """The conversation as stored, every version of every item, as JSON (see the docstring)."""
    shown = {item.id for item in conversation.items}
    origin = conversation.branched_from
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "id": conversation.id,
        "title": conversation.title,
        "branched_from": None if origin is None else asdict(origin),
        "system_prompt": conversation.system_prompt,
        "model": None if conversation.model is None else asdict(conversation.model),
        "view_start": conversation.view_start,
        "leaf": conversation.leaf,
        "items": [
            {"parent": parent, "shown": item.id in shown, "item": item_to_dict(item)}
            for item, parent in conversation.tree()
        ],
    }
    return json_text(document) + "\n"


def json_text(value: Any, indent: int | None = 2) -> str:
    """`value` as JSON whose characters never act on a terminal (escaped as `\\uXXXX`)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    # Such characters can only be inside strings, where an escape means the same.
    return _IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def file_stem(conversation: Conversation) -> str:
    """A file name (without suffix) for the conversation: its title's words and its id's start.

    Only letters, digits and dashes: a title can hold anything, a path too.
    """
    words = _SLUG.findall(unicodedata.normalize("NFKC", conversation.title).lower())
    slug = "-".join(words)[:STEM_CHARS].strip("-_") or "conversation"
    short_id = "".join(_SLUG.findall(conversation.id))[:8]
    return f"{slug}-{short_id}" if short_id else slug


def write_new_file(directory: Path, stem: str, suffix: str, text: str) -> Path:
    """Write `text` to a new file in `directory` (made if missing); never over another file.

    The name is `stem` + `suffix`, else `stem-2` + `suffix`, and so on. A
    write that fails (a full disk) leaves no partial file behind, and raises
    the `OSError`.
    """
    data = text.encode("utf-8", "backslashreplace")  # A lone surrogate, shown as its code.
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = directory / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            file = path.open("xb")  # Fails if the name is taken, even by a file made just now.
        except FileExistsError:
            continue
        try:
            with file:
                file.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise FileExistsError(f"{directory} already holds 999 exports named {stem}")


# Markdown


def markdown_blocks(conversation: Conversation) -> Iterator[str]:
    """The Markdown document's blocks, in order (`markdown_document` joins them).

    The shown path is taken when the first block is asked for: a version
    shown meanwhile does not mix into it.
    """
    items = list(conversation.items)
    versions = _versions(conversation)
    results = pair_results(items)
    paired = {result.id for result in results.values()}
    yield f"# {_plain(conversation.title) or 'Untitled'}"
    yield f"Conversation {_code_span(conversation.id)}, exported from chatui."
    if (origin := conversation.branched_from) is not None:
        yield f"Branched from “{_plain(origin.title)}” ({_code_span(origin.conversation_id)})."
    if (model := conversation.model) is not None:
        name = f" · {_plain(model.model)}" if model.model else " (its configured model)"
        yield f"Its own model: {_plain(model.provider)}{name}."
    if conversation.system_prompt is not None:
        yield "Its own system prompt:"
        yield _fenced(conversation.system_prompt)
    for n, item in enumerate(items):
        if item.id == conversation.view_start and n > 0:
            yield f"*{VIEW_START}*"
        version = versions.get(item.id, "")
        if isinstance(item, UserPrompt):
            yield f"## You{version}"
            if body := _body(item.text):
                yield body
        elif isinstance(item, ModelResponse):
            calls = {k: results.get((n, k)) for k in range(len(item.tool_calls))}
            yield from _response(item, version, calls)
        elif item.id not in paired:  # A result whose call is not on the path.
            yield f"**Tool result** {_code_span(item.name)} · {RESULT_WORDS[item.state]}"
            yield from _result(item)


def _versions(conversation: Conversation) -> dict[str, str]:
    """By item id, what follows the heading of each item that has other versions."""
    siblings: dict[tuple[str | None, str], list[str]] = {}
    for item, parent in conversation.tree():
        siblings.setdefault((parent, item.kind), []).append(item.id)
    return {
        item_id: f" · version {n} of {len(ids)}"
        for ids in siblings.values()
        if len(ids) > 1
        for n, item_id in enumerate(ids, 1)
    }


def _response(
    response: ModelResponse, version: str, results: dict[int, ToolResult | None]
) -> Iterator[str]:
    names = " · ".join(_plain(name) for name in (response.provider, response.model) if name)
    yield f"## Assistant · {names}{version}" if names else f"## Assistant{version}"
    k = 0
    for part in response.parts:
        if isinstance(part, ThinkingPart):
            yield from _thinking(part)
        elif isinstance(part, TextPart):
            if body := _body(part.text):
                yield body
        elif isinstance(part, ToolCallPart):
            yield from _call(part, results.get(k))
            k += 1
    if marker := _marker(response):
        yield marker


def _thinking(part: ThinkingPart) -> Iterator[str]:
    if part.redacted:
        summary, body = "Thinking (redacted by the provider)", "*Encrypted by the provider.*"
    elif part.text.strip():
        words = len(part.text.split())
        summary, body = f"Thought · {words} word{'' if words == 1 else 's'}", _body(part.text)
    else:
        return
    # The block's lines stand alone, so that what is between them is read as Markdown.
    yield f"<details>\n<summary>{summary}</summary>"
    yield body
    yield "</details>"


def _call(call: ToolCallPart, result: ToolResult | None) -> Iterator[str]:
    if not call.complete:
        status = CUT_OFF
    else:
        status = NOT_RUN if result is None else RESULT_WORDS[result.state]
    yield f"**Tool call** {_code_span(call.name)} · {status}"
    arguments, info = _arguments(call)
    yield _fenced(arguments, info) if arguments.strip() else "*No arguments.*"
    if result is not None:
        yield from _result(result)


def _arguments(call: ToolCallPart) -> tuple[str, str]:
    """The call's arguments, pretty JSON when they parse, else as the model wrote them."""
    if call.complete and not nests_too_deep(call.arguments):
        try:
            return json_text(json.loads(call.arguments)), "json"
        except ValueError:
            pass
    return call.arguments, ""


def _result(result: ToolResult) -> Iterator[str]:
    yield "**Result**" if result.content else "**Result**: *empty.*"
    if result.content:
        yield _fenced(result.content)
    if result.attachments:
        yield "Attached: " + "; ".join(_attachment(a) for a in result.attachments) + "."


def _attachment(attachment: Attachment) -> str:
    kept = "" if attachment.data else " (not kept)"
    return f"{_plain(attachment.mime_type)}, {byte_size(attachment.size)}{kept}"


def _marker(response: ModelResponse) -> str:
    """How the reply ended, when it did not simply complete; the screen's words."""
    error = f": {_plain(response.error)}" if response.error else ""
    words = []
    if response.state is ResponseState.INTERRUPTED:
        before = "" if response.parts else " before the first token"
        words.append(f"**■ interrupted{before}**{error}")
    elif response.state is ResponseState.FAILED:
        words.append(f"**✗ failed**{error}")
    elif response.state is ResponseState.STREAMING:
        words.append("*… unfinished: it was still being written*")
    if response.continued:
        words.append("*↻ continued*")
    if response.state.ended and response.finish_reason == "length":
        words.append("*… stopped at the token limit*")
    return " · ".join(words)


# Untrusted text made safe for the document


def _plain(text: str) -> str:
    """`text` as plain text on one line: no Markdown, no HTML, no control characters."""
    return _PLAIN.sub(r"\\\1", visible(" ".join(text.split())))


def _code_span(text: str) -> str:
    """`text` on one line as inline code, whatever backticks it holds."""
    text = visible(" ".join(text.split())) or " "
    ticks = "`" * (max((len(run) for run in _TICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fenced(text: str, info: str = "") -> str:
    """`text` as a fenced code block that no line of it can close."""
    text = visible(text.replace("\r\n", "\n")).removesuffix("\n")
    longest = max((len(run) for run in _TICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _body(text: str) -> str:
    """Markdown someone wrote (a prompt, a reply, reasoning), kept as written but contained.

    HTML tags outside code are escaped, so none acts (nor ends the
    `<details>` that holds reasoning, nor opens a comment that hides the
    rest); a fence left open at the end is closed, so the text cannot
    swallow what follows; control characters are made visible.
    """
    text = visible(text.replace("\r\n", "\n")).strip("\n")
    if _TAG.search(text):
        text, blocks = _escape_html(text)
        return _close_fence(text, blocks)
    return _close_fence(text)


def _escape_html(text: str) -> tuple[str, list[Token] | None]:
    """`text` with each `<` that could start HTML escaped, except in code; and its blocks.

    Escaping can change where code is (an HTML block no longer hides a
    fence, a link definition that becomes a paragraph no longer lets an
    indented line be code), so it is redone with the new structure until it
    holds; if it does not settle, every such `<` is escaped, code or not.
    """
    lines = text.split("\n")
    structure_of, blocks = text, _BLOCKS.parse(text)
    for _ in range(4):
        escaped = "\n".join(_escaped_outside_code(lines, blocks))
        if escaped == structure_of:
            return escaped, blocks
        if not _DEFINITION.search(structure_of) and all(b.type != "html_block" for b in blocks):
            return escaped, blocks  # Nothing escaped can change the blocks: it holds.
        structure_of, blocks = escaped, _BLOCKS.parse(escaped)
    return _TAG.sub("&lt;", text), None


def _escaped_outside_code(lines: list[str], blocks: list[Token]) -> list[str]:
    """`lines` escaped outside the code blocks and code spans of `blocks`, their structure."""
    out = [_TAG.sub("&lt;", line) for line in lines]
    for token in blocks:
        if token.map is None:
            continue
        start, end = token.map
        if token.type in ("fence", "code_block"):
            out[start:end] = lines[start:end]
        elif token.type == "inline":  # One paragraph or heading: its code spans stay.
            out[start:end] = _escaped_outside_spans("\n".join(lines[start:end])).split("\n")
    return out


def _escaped_outside_spans(text: str) -> str:
    """`text` with `<` escaped except inside code spans (a backtick run up to the next of its
    length; a run with none is literal, and one after a backslash starts one backtick later)."""
    out: list[str] = []
    done = search = 0
    while (opener := _TICKS.search(text, search)) is not None:
        start = opener.start()
        if _backslashes_before(text, start) % 2:
            search = start + 1
            continue
        length = opener.end() - start
        closer = next(
            (run for run in _TICKS.finditer(text, opener.end()) if len(run.group()) == length),
            None,
        )
        if closer is None:
            search = opener.end()
            continue
        out.append(_TAG.sub("&lt;", text[done:start]))
        out.append(text[start : closer.end()])
        done = search = closer.end()
    out.append(_TAG.sub("&lt;", text[done:]))
    return "".join(out)


def _backslashes_before(text: str, at: int) -> int:
    count = 0
    while at > count and text[at - count - 1] == "\\":
        count += 1
    return count


def _close_fence(text: str, blocks: list[Token] | None = None) -> str:
    """`text`, with a closing fence added if it ends inside a fenced code block of its own.

    `blocks`: its structure, if parsed already. Only a top-level fence runs
    on past the text: one in a list item or a quote ends with it, at the
    next line that is not indented.
    """
    if "```" not in text and "~~~" not in text:
        return text
    if blocks is None:
        blocks = _BLOCKS.parse(text)
    top = [token for token in blocks if token.level == 0 and token.map]
    last = top[-1] if top else None
    if last is None or last.type != "fence" or last.map is None:
        return text
    start, end = last.map
    last_line = text.split("\n")[end - 1] if end - start > 1 else ""
    indent = len(last_line) - len(last_line.lstrip(" "))
    fence = last_line.lstrip(" ").rstrip(" \t")
    marker = last.markup
    closed = indent < 4 and len(fence) >= len(marker) and fence == marker[0] * len(fence)
    return text if closed else f"{text}\n{marker}"
