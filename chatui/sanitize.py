"""Make untrusted text (model output, tool output, errors) safe to put on screen.

Widgets never parse this text as Rich or Textual markup (they are given
`Text`/`Content` objects or Markdown). Terminal control characters are the
other danger: Rich passes ESC through, so `\\x1b[2J` in a reply would reach the
terminal. `visible()` maps every control character except newline and tab to
a visible stand-in (ESC becomes ␛, BEL becomes ␇, C1 controls and the
bidirectional-text controls become their escape code, like `\\u202e`), so the
sequence is shown literally and never acted on.
"""

from __future__ import annotations

_TABLE: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20) if code not in (9, 10)}
_TABLE[0x7F] = "\u2421"  # ␡
_TABLE.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
# Bidirectional-text controls make displayed text read differently from what it
# is (U+202E turns the rest of a line around): shown as their code, like C1.
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_TABLE.update({code: f"\\u{code:04x}" for code in BIDI_CONTROLS})


def visible(text: str) -> str:
    """`text` with control characters (but newline and tab) made visible."""
    return text.translate(_TABLE)


def one_line(text: str, limit: int) -> str:
    """`text` for one line of a row, a notice or a sentence: cut at `limit` characters (an
    ellipsis marks the cut), every run of line breaks and spaces (a carriage return too) one
    space, the other control characters made visible.

    Cut first, so that a huge text costs no more than `limit`. Text that may hold a key is
    redacted before it comes here: cut first, a key could show in part.
    """
    line = visible(" ".join(text[:limit].split()))
    return line + "…" if len(text) > limit else line
