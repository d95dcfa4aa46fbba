"""The Markdown of a reply's text runs, and the parser they share.

A module of its own so that Textual's `Markdown` and markdown-it (about
30 ms to import) load with the first reply shown, not before the first
frame: `chat_message` imports this where it makes a text run.

That import may run while a thread imports a provider's or the MCP
library: `html` is imported first, as that library imports it (the package,
then `html.entities`). markdown-it asks for `html.entities` first; the two
orders at once can deadlock on Python's import locks, which fails one of
the two imports.
"""

from __future__ import annotations

import html  # noqa: F401  Before markdown-it (see the docstring).
import threading

from markdown_it import MarkdownIt
from textual.app import ComposeResult

from chatui._textual.top_down import TopDownStack
from chatui.widgets.fold import Fold
from chatui.widgets.streaming_markdown import StreamingMarkdown

_parsers = threading.local()


def _shared_parser() -> MarkdownIt:
    """The Markdown parser of this thread, shared by every reply.

    Without a factory, Textual builds a new parser (and compiles its linkify
    patterns) on every append: a third of the streaming cost. One per thread,
    not one in all: `Markdown.update()` parses in a worker thread, and the
    linkify matcher keeps state between calls.
    """
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = MarkdownIt("gfm-like")  # Textual's default preset.
    return parser


class ReplyMarkdown(StreamingMarkdown, TopDownStack):
    """Markdown for (a text run of) a reply, which can fold its blocks above the view.

    A long last block streams in pieces (see `StreamingMarkdown`).

    `BLANK`: the widget itself draws nothing (no border, padding or background
    of its own; its blocks draw the text), so Textual gives it blank lines
    instead of rendering its whole height, as long as the reply, each time it
    grows.
    """

    BLANK = True

    def __init__(self, markdown: str | None = None) -> None:
        super().__init__(markdown, parser_factory=_shared_parser)
        self._fold = Fold()
        # A stored reply's text is parsed after the mount, on a worker thread; until its
        # blocks are in, it is laid out without them (`settled`).
        self._parsed = markdown is None

    def on_markdown_table_of_contents_updated(self) -> None:
        self._parsed = True  # Its own, posted once its first blocks are mounted.

    def settled(self) -> bool:
        """Whether its blocks are in and the last layout placed them (see `fold.Settles`)."""
        blocks = [child for child in self.children if child is not self._fold.spacer]
        shown = [block for block in blocks if block.display]
        if not (self._parsed and shown):
            return self._parsed  # Not parsed yet; or nothing to show (no height to wait for).
        # Laid out with its blocks, each a line at least (an empty region: not laid out yet).
        return bool(self.virtual_region) and all(block.virtual_region for block in shown)

    def compose(self) -> ComposeResult:
        yield self._fold.spacer  # Blocks are mounted after it.

    def fold_above(self, screen_y: int) -> int:
        """Fold the blocks that end above `screen_y`, a screen row."""
        blocks = [child for child in self.children if child is not self._fold.spacer]
        return self._fold.fold(blocks, screen_y - self.content_region.y)

    def unfold(self) -> None:
        self._fold.unfold()

    def long_block_ends(self) -> None:
        self.unfold()  # Its folded pieces go, and its start is drawn again, whole.
