"""Make untrusted text (model output, tool output, errors) safe to put on screen.

Widgets never parse this text as Rich or Textual markup (they are given
`Text`/`Content` objects or Markdown). Terminal control characters are the
other danger: Rich passes ESC through, so `\\x1b[2J` in a reply would reach the
terminal. `visible()` maps every control character except newline and tab to
a visible stand-in (ESC becomes ␛, BEL becomes ␇), so the sequence is shown
literally and never acted on.
"""

from __future__ import annotations

_TABLE: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20) if code not in (9, 10)}
_TABLE[0x7F] = "\u2421"  # ␡
_TABLE.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})


def visible(text: str) -> str:
    """`text` with control characters (but newline and tab) made visible."""
    return text.translate(_TABLE)
