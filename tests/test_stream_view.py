"""A streamed reply shows every fragment it was given exactly once, even when the
stop lands on the very first token; a long paragraph or code block costs each append
what a short one does, and ends drawn as Markdown draws it whole."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownBlock, MarkdownFence

from chatui.messages import ModelResponse
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.reply_markdown import ReplyMarkdown
from tests.support.app import wait_until


class OneReply(App[None]):
    def compose(self) -> ComposeResult:
        yield AssistantMessage(ModelResponse("p", "m"))


async def test_stop_at_any_token_loses_and_repeats_nothing() -> None:
    fragments = [f"word{i} " + ("\n\n" if i % 7 == 6 else "") for i in range(300)]
    for stop_after in (1, 2, 5, 50, 300):
        app = OneReply()
        async with app.run_test():
            view = app.query_one(AssistantMessage)
            for fragment in fragments[:stop_after]:
                await view.write(fragment)
            view.mark_stopped()  # Esc, possibly while the first append still runs.
            await view.write("late")
            await view.finish()

            shown = "".join(m.source for m in view.query(Markdown))
            assert shown == "".join(fragments[:stop_after])
            assert view.late_writes == 1


def test_a_replys_header_names_its_provider_and_model() -> None:
    """A conversation can change provider and model: each reply says which wrote it."""

    def title(provider: str, model: str) -> str:  # Textual gives it back as markup.
        return AssistantMessage(ModelResponse(provider, model)).border_title

    assert title("openai", "gpt-x") == "openai · gpt-x"
    assert title("local", "") == "local"
    # The bracket escaped (shown, not parsed), the ESC made visible.
    assert title("anthropic", "[b]x\x1b[2J") == "anthropic · \\[b]x␛[2J"


# A long block (one paragraph, one code block) costs each append what a short one does.

PROSE = (
    "Streaming a reply means appending a few characters at a time, while the user reads. "
    "Each fragment is untrusted text from a model, and it may be long! Does it end? "
)
CODE = 'def f(x: int) -> int:\n    """Twice x."""\n\n    return 2 * x  # Doubled.\n'


class ScrolledReply(App[None]):
    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield AssistantMessage(ModelResponse("p", "m"))


class Work:
    """The largest text parsed, highlighted or given to one widget, as a reply streams."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed: list[int] = []
        self.highlighted: list[int] = []
        self.updated: list[int] = []
        parse, highlight, update = MarkdownIt.parse, MarkdownFence.highlight, Static.update

        def recording_parse(parser: MarkdownIt, src: str, env=None):  # type: ignore[no-untyped-def]
            self.parsed.append(len(src))
            return parse(parser, src, env)

        def recording_highlight(cls, code: str, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.highlighted.append(len(code))
            return highlight(code, *args, **kwargs)

        def recording_update(widget: Static, content="", **kwargs):  # type: ignore[no-untyped-def]
            self.updated.append(len(str(content)))
            return update(widget, content, **kwargs)

        monkeypatch.setattr(MarkdownIt, "parse", recording_parse)
        monkeypatch.setattr(MarkdownFence, "highlight", classmethod(recording_highlight))
        monkeypatch.setattr(Static, "update", recording_update)

    def largest(self) -> int:
        return max(self.parsed + self.highlighted + self.updated)

    def clear(self) -> None:
        self.parsed.clear()
        self.highlighted.clear()
        self.updated.clear()


def fragments_of(text: str) -> list[str]:
    """`text` in model-sized fragments: a word (with the space or line break before it)."""
    fragments = re.findall(r"\s*\S+", text)
    rest = text[len("".join(fragments)) :]
    return [*fragments, rest] if rest else fragments


def blocks_of(markdown: Markdown) -> list[tuple[str, str]]:
    """What a Markdown widget shows: each top-level block's kind and text (its parts')."""
    shown = []
    for block in markdown.query_children(MarkdownBlock):
        parts = [block, *block.query(MarkdownBlock).results()]
        text = " | ".join(
            part.code if isinstance(part, MarkdownFence) else str(part.render()) for part in parts
        )
        shown.append((type(block).__name__, text))
    return shown


async def shown_blocks_of(app: App[None], text: str) -> list[tuple[str, str]]:
    """The blocks `text` shows as when it is given whole, not streamed."""
    reference = Markdown(text)
    await app.query_one(VerticalScroll).mount(reference)
    try:
        return blocks_of(reference)
    finally:
        await reference.remove()


def words_shown(view: AssistantMessage) -> list[str]:
    return " ".join(str(b.render()) for b in view.query(MarkdownBlock).results()).split()


LONG_BLOCKS = {
    "paragraph": PROSE * 120,  # 20 KB, no line break.
    "code": "```python\n" + CODE * 300 + "```\n",  # 22 KB.
    # No sentence ends, and a parenthesis never closed: cut where it can be.
    "paragraph without a full stop": "(see " + "words and 42 numbers, " * 900,
}


@pytest.mark.parametrize("shape", LONG_BLOCKS)
async def test_a_long_block_costs_each_append_what_a_short_one_does(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = LONG_BLOCKS[shape]
    fragments = fragments_of(text)
    assert "".join(fragments) == text
    app = ScrolledReply()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(AssistantMessage)
        work = Work(monkeypatch)
        for fragment in fragments:
            await view.write(fragment)
        markdown = view.query_one(Markdown)
        await wait_until(pilot, lambda: markdown.source == text)
        await pilot.pause()
        # Parsing, highlighting and drawing are bounded by a few pieces, not by the
        # block's 20 KB: the cost of a frame does not grow as the block does.
        assert work.largest() < 5_000, shape

        work.clear()
        await view.finish()
        await pilot.pause()
        assert blocks_of(markdown) == await shown_blocks_of(app, text)
        assert max(work.parsed) < 2 * len(text)  # The block, once, and no more.


async def test_a_long_paragraph_shows_every_word_once_as_it_streams() -> None:
    text = PROSE * 60
    fragments = fragments_of(text)
    app = ScrolledReply()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(AssistantMessage)
        for n, fragment in enumerate(fragments, 1):
            await view.write(fragment)
            if n % 400 == 0:
                written = "".join(fragments[:n]).split()
                await wait_until(pilot, lambda: words_shown(view) == written)  # noqa: B023
        await view.finish()
        assert words_shown(view) == text.split()


async def test_a_long_code_block_shows_every_line_once_as_it_streams() -> None:
    text = "```python\n" + CODE * 200
    fragments = fragments_of(text)
    app = ScrolledReply()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(AssistantMessage)

        def code_shown() -> str:
            return "\n".join(fence.code for fence in view.query(MarkdownFence).results())

        for n, fragment in enumerate(fragments, 1):
            await view.write(fragment)
            if n % 500 == 0:
                written = "".join(fragments[:n]).removeprefix("```python\n").rstrip()
                await wait_until(pilot, lambda: code_shown() == written)  # noqa: B023
        await view.finish()
        assert code_shown() == text.removeprefix("```python\n").rstrip()
        assert len(view.query(MarkdownFence)) == 1


@pytest.mark.parametrize("shape", LONG_BLOCKS)
async def test_a_stop_inside_a_long_block_keeps_what_came_before_it(shape: str) -> None:
    fragments = fragments_of(LONG_BLOCKS[shape] + "\n\nAfter the block.\n")
    for stop_after in (len(fragments) // 3, len(fragments) - 2):
        app = ScrolledReply()
        async with app.run_test(size=(80, 24)) as pilot:
            view = app.query_one(AssistantMessage)
            for fragment in fragments[:stop_after]:
                await view.write(fragment)
            view.mark_stopped()  # Esc, with the block still streaming.
            await view.write("late")
            await view.finish()
            await pilot.pause()

            written = "".join(fragments[:stop_after])
            markdown = view.query_one(Markdown)
            assert markdown.source == written
            assert blocks_of(markdown) == await shown_blocks_of(app, written)
            assert view.late_writes == 1


SENTENCES = PROSE * 14  # 2.3 KB: past a piece.
TRICKY = {
    "a setext underline turns the paragraph into a heading": SENTENCES + "\n===\n\nAfter.",
    "a list interrupts the paragraph": SENTENCES + "\n- one\n- two\n",
    "a table follows the paragraph": SENTENCES + "\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    "code spans and links across the cuts": (
        "See `a. Long code span. Still code` and [a link. With. Dots](https://example.com/x). " * 30
    ),
    "emphasis across the cuts": "Some **bold text. Still bold!** and _more. Words_ here. " * 40,
    "a code block closed, then text": "```\n" + CODE * 20 + "```\nAfter the code.\n",
    "a tilde fence holding backticks": "~~~~md\n" + "```\nx\n```\n" * 100 + "~~~~\n\nDone.",
    "blank lines at piece ends": "```python\n" + "x = 1\n\n\n" * 200 + "```",
    "an unclosed code block": "Intro.\n\n```js\n" + "let x = 1;\n" * 150,
    "a long paragraph with line breaks": "A line of words. And more\n" * 120,
    "an indented fence": "  ```\n" + "  code line\n" * 120 + "  ```\n",
    "two long blocks in a row": SENTENCES + "\n\n```\n" + CODE * 15 + "```\n\n" + SENTENCES,
}


@pytest.mark.parametrize("case", TRICKY)
async def test_a_long_block_ends_as_markdown_shows_it_whole(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = TRICKY[case]
    ended: list[int] = []  # How many pieces each long block had when it ended.
    long_block_ends = ReplyMarkdown.long_block_ends

    def counting(markdown: ReplyMarkdown) -> None:
        ended.append(len(markdown.query(".-continuation")))
        long_block_ends(markdown)

    monkeypatch.setattr(ReplyMarkdown, "long_block_ends", counting)
    app = ScrolledReply()
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(AssistantMessage)
        for fragment in fragments_of(text):
            await view.write(fragment)
        await view.finish()
        await pilot.pause()
        markdown = view.query_one(Markdown)
        assert markdown.source == text
        assert blocks_of(markdown) == await shown_blocks_of(app, text)
        assert ended and all(ended)  # It did stream in pieces.
        assert not markdown.query(".-continuation")


async def test_a_long_code_block_looks_the_same_in_pieces_as_whole() -> None:
    text = "Some code:\n\n```python\n" + CODE * 40  # 160 lines, still open.
    app = ScrolledReply()
    async with app.run_test(size=(80, 200)) as pilot:
        view = app.query_one(AssistantMessage)
        for fragment in fragments_of(text):
            await view.write(fragment)
        await wait_until(pilot, lambda: view.query_one(Markdown).source == text)
        await pilot.pause()
        assert len(view.query(MarkdownFence)) > 5  # In pieces,
        in_pieces = screenshot(app)

        await view.finish()
        await pilot.pause()
        assert len(view.query(MarkdownFence)) == 1  # then whole,
        assert screenshot(app) == in_pieces  # and not a cell moved.


def screenshot(app: App[None]) -> str:
    """The screen as SVG, without the unique name each export gives its styles."""
    return re.sub(r"terminal-\d+", "terminal", app.export_screenshot())
