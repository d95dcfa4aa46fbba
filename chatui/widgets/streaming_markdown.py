"""Markdown that streams a long paragraph or code block at a cost that does not grow with it.

Textual's `Markdown.append` parses the document's last block again from its
first line, and draws it again whole, on every append: a block of n
characters streamed in small appends costs time in n², and a model's long
code block (or a paragraph with no break) slowed a reply to a crawl.

While the last block is a paragraph or a fenced code block of more than
`PIECE` characters, `StreamingMarkdown` holds the new text back from Textual
and shows it in pieces: the block's start stays as Textual drew it, then come
pieces of the same kind drawn once each, and only the open piece, the last,
is parsed and drawn on each append. A code block is cut after a line, and its
pieces look exactly like the whole block; a paragraph where a sentence ends
(before any word, or anywhere, when none ends for long), and its next sentence
starts a line until the end. When the block ends (text after it starts another
block) or the stream does (`settle()`), the pieces go and Textual takes the
held text in one append: the block is parsed and drawn once more, whole,
exactly as Markdown renders it when it is not streamed. A block with nowhere
to cut (one very long line of code) streams as Textual streams it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from markdown_it import MarkdownIt
from markdown_it.token import Token
from textual.await_complete import AwaitComplete
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownBlock, MarkdownFence

Kind = Literal["paragraph", "fence"]

# Characters: a block longer than this streams in pieces of about this size. A code
# block's are smaller: each append highlights its open piece again.
PIECE: dict[Kind, int] = {"paragraph": 1_000, "fence": 400}

_FENCE_OPENING = re.compile(r" {0,3}(`{3,}|~{3,})")
# A paragraph is cut before the first letter of a sentence.
_SENTENCE_START = re.compile(r"""[.!?]["')\]]*\s+(?=[^\W\d_])""")
# When no sentence ends for long: before a word, or (longer still) anything.
_PARAGRAPH_CUTS = [_SENTENCE_START, re.compile(r"\s+(?=[^\W\d_])"), re.compile(r"\s+(?=\S)")]
# A code block is cut after a line with text (where its start ends, Textual drops blank lines).
_LINE_START = re.compile(r"(?<=\S)[ \t]*\n")


def _kind_of(block: MarkdownBlock) -> Kind | None:
    """The kind of a top-level block that can stream in pieces, if it is one."""
    if block.name == "fence" and isinstance(block, MarkdownFence):
        return "fence"
    if block.name == "paragraph_open":
        return "paragraph"
    return None


def _cuts(kind: Kind, text: str, start: int = 0, level: int = 0) -> list[int]:
    """Where `text` can be cut into pieces, at `start` or after: each is a piece's first index.

    `level` 0 cuts a paragraph where a sentence ends, 1 before any word, 2 anywhere.
    """
    if kind == "fence":
        return [m.end() for m in _LINE_START.finditer(text, start)]
    cuts = [m.end() for m in _PARAGRAPH_CUTS[level].finditer(text, start)]
    if level == 2:
        return cuts
    # Not inside a code span or a link: its markup would show until the block ends.
    return [
        cut
        for cut in cuts
        if text.count("`", 0, cut) % 2 == 0
        and text.count("[", 0, cut) == text.count("]", 0, cut)
        and text.count("(", 0, cut) == text.count(")", 0, cut)
    ]


@dataclass
class _LongBlock:
    """The long last block, streaming in pieces, and the text held back from Textual."""

    kind: Kind
    head: MarkdownBlock  # Textual's widget for the block's start.
    context: str  # Parsed before the open piece: a code block's opening line.
    held: str = ""  # The text after the head: every piece's.
    open_start: int = 0  # Where in `held` the open piece starts.
    pieces: list[MarkdownBlock] = field(default_factory=list)  # The open piece last.

    @property
    def open_text(self) -> str:
        return self.held[self.open_start :]

    def continues(self, tokens: list[Token]) -> bool:
        """Whether `tokens`, the open piece's, are still one block of this kind."""
        if self.kind == "fence":
            return len(tokens) == 1 and tokens[0].type == "fence"
        return [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]


class StreamingMarkdown(Markdown):
    """Markdown whose last block, when long, costs each append a piece's work, not the block's.

    `source` is all the text appended, as with Textual's Markdown: held back
    or not, drawn or still on its way. Call `settle()` when the stream ends: the
    long block is then drawn as Markdown draws it whole.
    """

    # A long block's start (`-continued`), its pieces, and its open piece (`-continuation`)
    # look like one block: Textual's margins and padding (8.2), without those between.
    # Textual sets all four sides of a rule's margin or padding, even for `margin-top`.
    DEFAULT_CSS = """
    StreamingMarkdown > MarkdownParagraph.-continued {
        margin: 0;
    }
    StreamingMarkdown > MarkdownFence.-continued {
        margin: 1 0 0 0;
        & > Label { padding: 1 2 0 2; }
        &:ansi { margin: 0; & > Label { padding: 1 0 0 0; } }
    }
    StreamingMarkdown > MarkdownFence.-continuation {
        margin: 0 0 1 0;
        & > Label { padding: 0 2 1 2; }
        &:ansi { margin: 0; & > Label { padding: 0 0 1 0; } }
    }
    StreamingMarkdown > MarkdownFence.-continued.-continuation {
        margin: 0;
        & > Label { padding: 0 2; }
        &:ansi { & > Label { padding: 0; } }
    }
    """

    def __init__(
        self, markdown: str | None = None, *, parser_factory: Callable[[], MarkdownIt]
    ) -> None:
        super().__init__(markdown, parser_factory=parser_factory)
        self._parser = parser_factory
        self._long: _LongBlock | None = None
        self._unapplied = ""  # Appended, not yet given to Textual or held back.
        self._appending = asyncio.Lock()  # One append at a time, settling included.
        self._textuals_source = False  # Whether `source` answers for Textual's append.

    @property
    def source(self) -> str:
        if self._textuals_source:
            return super().source
        held = self._long.held if self._long is not None else ""
        return super().source + held + self._unapplied

    def tail_height(self) -> int:
        """The most the document can shrink as it grows: about its last block's height.

        Textual parses the last block again on each append, and it can come out
        shorter. A long block's pieces give way to the block drawn whole, where a
        code block shows the same lines and a paragraph does not start a line at
        each piece, or show the markup of an emphasis a cut split: the open piece,
        and two lines a piece.
        """
        long = self._long
        if long is None:
            last = self._last_block()
            return _outer_height(last) if last is not None else 0
        slack = 2 * len(long.pieces) if long.kind == "paragraph" else 2
        return (_outer_height(long.pieces[-1]) if long.pieces else 0) + slack

    def long_block_ends(self) -> None:
        """Called as a long block's pieces are about to give way to the whole block."""

    def _last_block(self) -> MarkdownBlock | None:
        # Children, not a DOM query: this runs on every append, and after every layout.
        return next((c for c in reversed(self.children) if isinstance(c, MarkdownBlock)), None)

    def update(self, markdown: str) -> AwaitComplete:
        self._long = None  # Textual removes every block, pieces included.
        return super().update(markdown)

    def append(self, markdown: str) -> AwaitComplete:
        self._unapplied += markdown
        return AwaitComplete(self._append(markdown))

    async def settle(self) -> None:
        """The stream ended: show a long block as Markdown shows it whole."""
        async with self._appending:
            if self._long is not None:
                await self._end_long_block()

    async def _append(self, text: str) -> None:
        async with self._appending:
            if self._long is None:
                text = await self._start_long_block(text)
                if not text:
                    return
            await self._grow(text)

    def _to_textual(self, text: str) -> AwaitComplete:
        """Give `text`, the next appended, to Textual's append."""
        self._unapplied = self._unapplied[len(text) :]
        self._textuals_source = True  # Textual reads it once, as it is called.
        try:
            return super().append(text)
        finally:
            self._textuals_source = False

    async def _start_long_block(self, text: str) -> str:
        """Give `text` to Textual, or the part up to where its long last block can be cut.

        Returns the text left for the pieces, if the long block started.
        """
        head = self._last_block()
        kind = _kind_of(head) if head is not None else None
        length = _length(head) if head is not None and kind is not None else 0
        if head is None or kind is None or length < PIECE[kind]:
            await self._to_textual(text)
            return ""
        # Cut in the new text, seen after the start of its line.
        before = super().source  # All the text applied: none is held back.
        line_start = before.rfind("\n") + 1
        window = before[line_start:] + text
        cuts = _cuts(kind, window, len(window) - len(text), _level(length, PIECE[kind]))
        if not cuts:
            await self._to_textual(text)
            return ""
        cut = cuts[0] - (len(window) - len(text))
        if cut:
            await self._to_textual(text[:cut])
        if self._last_block() is not head or _kind_of(head) != kind:
            await self._to_textual(text[cut:])  # A new block came, or a setext heading, say.
            return ""
        context = ""
        if kind == "fence":
            start = head.source_range[0]
            lines = super().source.splitlines()
            opening = lines[start] if start < len(lines) else ""
            if not _FENCE_OPENING.match(opening):
                await self._to_textual(text[cut:])
                return ""
            context = opening + "\n"
        self._long = _LongBlock(kind, head, context)
        head.add_class("-continued")
        return text[cut:]

    async def _grow(self, text: str) -> None:
        """Add `text` to the long block's open piece, cutting a piece off when it is long."""
        long = self._long
        assert long is not None
        self._unapplied = self._unapplied[len(text) :]
        long.held += text
        tokens = self._parse(long.context + long.open_text)
        if not long.continues(tokens):
            await self._end_long_block()  # The block ended (or changed): Textual takes it.
            return
        piece_size = PIECE[long.kind]
        if len(long.open_text) >= piece_size and long.pieces:
            open_text = long.open_text
            cuts = _cuts(long.kind, open_text, 1, _level(len(open_text), piece_size))
            if cuts:
                rest = self._parse(long.context + open_text[cuts[-1] :])
                if long.continues(rest):
                    done = self._parse(long.context + open_text[: cuts[-1]])
                    self._show(long.pieces[-1], done, long.kind, whole=False)
                    long.pieces[-1].add_class("-continued")
                    long.open_start += cuts[-1]
                    tokens = rest
        if long.pieces and "-continued" not in long.pieces[-1].classes:
            self._show(long.pieces[-1], tokens, long.kind, whole=True)
        else:
            piece = self._new_piece(tokens, long.kind)
            long.pieces.append(piece)
            await self.mount(piece)

    async def _end_long_block(self) -> None:
        """Remove the pieces and give the held text to Textual, which draws the block whole."""
        long = self._long
        assert long is not None
        self.long_block_ends()
        with self.app.batch_update():  # No frame between the pieces going and the block.
            await self.remove_children(long.pieces)
            long.head.remove_class("-continued")
            self._long = None
            self._unapplied = long.held + self._unapplied  # Given on, in order.
            await self._to_textual(long.held)

    def _parse(self, text: str) -> list[Token]:
        return self._parser().parse(text)

    def _new_piece(self, tokens: list[Token], kind: Kind) -> MarkdownBlock:
        if kind == "fence":
            piece: MarkdownBlock = _CodePiece(self, tokens[0], tokens[0].content.rstrip())
        else:
            piece = self.get_block_class("paragraph_open")(self, tokens[0])
            piece.build_from_token(tokens[1])
        piece.add_class("-continuation", update=False)  # Styled as it is mounted.
        return piece

    def _show(self, piece: MarkdownBlock, tokens: list[Token], kind: Kind, whole: bool) -> None:
        """Show `tokens` in `piece`: `whole` if it is the open one, which ends the block."""
        if kind == "paragraph":
            piece.build_from_token(tokens[1])
            return
        assert isinstance(piece, MarkdownFence)
        content = tokens[0].content
        # A piece cut off ends after its line; the block's end drops blank lines, as Textual does.
        code = content.rstrip() if whole else content.removesuffix("\n")
        if code != piece.code:
            piece.code = code
            dark = self.app.current_theme.dark
            ansi = self.app.native_ansi_color
            piece.set_content(MarkdownFence.highlight(code, piece.lexer, ansi=ansi, dark=dark))


class _CodePiece(MarkdownFence):
    """A piece of a long code block, highlighted again when its code or the theme changes.

    Textual's code block highlights its code again on every change of style,
    and a piece's class changes when the next piece starts.
    """

    def __init__(self, markdown: Markdown, token: Token, code: str) -> None:
        super().__init__(markdown, token, code)  # Highlights it.
        self._highlighted_for = self._current_theme()

    def _current_theme(self) -> tuple[bool, bool]:
        return self.app.native_ansi_color, self.app.current_theme.dark

    def notify_style_update(self) -> None:
        theme = self._current_theme()
        if theme != self._highlighted_for:
            self._highlighted_for = theme
            super().notify_style_update()  # Highlights it again.
        else:
            MarkdownBlock.notify_style_update(self)


def _level(length: int, piece: int) -> int:
    """How freely to cut a paragraph `length` characters long: see `_cuts`."""
    return 0 if length < 2 * piece else 1 if length < 4 * piece else 2


def _outer_height(widget: Widget) -> int:
    margin = widget.styles.margin
    return widget.outer_size.height + margin.top + margin.bottom


def _length(block: MarkdownBlock) -> int:
    """About how many characters a paragraph or code block holds."""
    if isinstance(block, MarkdownFence):
        return len(block.code)
    visual = block.visual
    return len(visual) if isinstance(visual, Content) else 0
