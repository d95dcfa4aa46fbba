"""Untrusted text is shown literally: control characters and bidi controls made visible."""

from __future__ import annotations

import pytest

from chatui.sanitize import one_line, visible

BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


@pytest.mark.parametrize("code", BIDI)
def test_bidirectional_controls_are_shown_as_their_code(code: int) -> None:
    shown = visible(f"abc{chr(code)}def")

    assert shown == f"abc\\u{code:04x}def"
    assert chr(code) not in shown


def test_c0_and_c1_controls_are_visible_but_newline_and_tab_stay() -> None:
    assert visible("a\x1b[2Jb\x07\x9b\n\t") == "a␛[2Jb␇\\x9b\n\t"


def test_ordinary_text_is_unchanged() -> None:
    text = "Grüße, 世界, emoji 👩‍💻 and arabic مرحبا"
    assert visible(text) == text


def test_one_line_is_cut_first_then_made_one_visible_line() -> None:
    assert one_line("boom:\n  \x1b[31mred\x1b[0m\ttoo", 100) == "boom: ␛[31mred␛[0m too"
    assert one_line("a" * 10 + "\x1b" * 1_000_000, 10) == "a" * 10 + "…"  # Cut before the work.
    assert one_line("short", 5) == "short"
