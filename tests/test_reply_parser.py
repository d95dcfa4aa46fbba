"""The Markdown parser replies share: one per thread, reused within it."""

from __future__ import annotations

import threading

from chatui.widgets.reply_markdown import ReplyMarkdown


def parser_of(widget: ReplyMarkdown):  # type: ignore[no-untyped-def]
    return widget._parser_factory()


def test_replies_share_a_parser_within_a_thread_and_never_across_threads() -> None:
    # Textual parses a widget's initial text in a worker thread, and the linkify
    # matcher inside the parser keeps state between calls: sharing it across
    # threads could mangle links in a reply.
    here = [parser_of(ReplyMarkdown()) for _ in range(3)]
    there: list[object] = []
    worker = threading.Thread(
        target=lambda: there.extend(parser_of(ReplyMarkdown()) for _ in range(2))
    )
    worker.start()
    worker.join()

    assert here[0] is here[1] is here[2]
    assert there[0] is there[1]
    assert there[0] is not here[0]
    tokens = here[0].parse("see https://example.com")
    assert any(t.type == "inline" and "link_open" in [c.type for c in t.children] for t in tokens)
