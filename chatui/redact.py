"""Keeping API keys out of everything chatui shows, stores or sends on.

A key can arrive whole (a proxy's error page echoing the `Authorization`
header, a `.env` file a tool read) or in part: something upstream cut it (a
gateway that shows a header's first 40 characters), or chatui itself cut the
text around it (an error body, a file, a command's output). So a `Redactor`
replaces every run of `MIN_FRAGMENT` or more characters that also occurs in
a key, not only the whole key; and every place that cuts text to a size
(`clip`, `clip_head_tail`) redacts first and cuts after, so a cut can never
leave a key's start or end behind.

The turn sets the redactor for the keys it knows (the config's and its
provider's) in a context variable, `current_redactor`, before any provider
or tool work: the tools' output cutting and the providers' error texts run in
that context (a worker thread gets a copy of it) and use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar

MASK = "***"
MIN_FRAGMENT = 8  # Characters of a key that count as the key: a prefix such as "sk-proj-" is 8.


class Redactor:
    """Replaces keys, and any run of `MIN_FRAGMENT` or more of their characters, by `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.longest = len(self.secrets[0]) if self.secrets else 0
        grams: dict[str, list[tuple[str, int]]] = {}
        for secret in self.secrets:
            size = min(MIN_FRAGMENT, len(secret))
            for start in range(len(secret) - size + 1):
                grams.setdefault(secret[start : start + size], []).append((secret, start))
        self._grams = grams
        self._pattern = (
            re.compile("|".join(re.escape(g) for g in sorted(grams, key=len, reverse=True)))
            if grams
            else None
        )

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __call__(self, text: str) -> str:
        """`text` with every key, whole or in part, replaced by `***`."""
        if self._pattern is None or not text:
            return text
        spans: list[tuple[int, int]] = []
        position = 0
        while (found := self._pattern.search(text, position)) is not None:
            start, end = self._widest(text, found.start(), found.group())
            if spans and start <= spans[-1][1]:  # Touches the previous one: one mask.
                before = spans.pop()
                start, end = min(start, before[0]), max(end, before[1])
            spans.append((start, end))
            position = end
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in spans:
            pieces += [text[last:start], MASK]
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def _widest(self, text: str, at: int, gram: str) -> tuple[int, int]:
        """The longest stretch around `text[at:]`'s `gram` that is also a run of one key."""
        best = (at, at + len(gram))
        for secret, offset in self._grams[gram]:
            left = 0
            while (
                left < offset and at - left > 0 and text[at - left - 1] == secret[offset - left - 1]
            ):
                left += 1
            right = len(gram)
            while (
                offset + right < len(secret)
                and at + right < len(text)
                and text[at + right] == secret[offset + right]
            ):
                right += 1
            if right + left > best[1] - best[0]:
                best = (at - left, at + right)
        return best


NO_REDACTION = Redactor()
current_redactor: ContextVar[Redactor] = ContextVar("current_redactor", default=NO_REDACTION)


def redact(text: str) -> str:
    """`text` redacted of the keys of the turn this code runs in (if any)."""
    return current_redactor.get()(text)


def margin() -> int:
    """How many characters past a cut to read, so that a key across it is redacted whole."""
    return current_redactor.get().longest


def clip(text: str, limit: int) -> tuple[str, bool]:
    """`text` redacted, then cut to its first `limit` characters; and whether it was cut.

    Give it `limit + margin()` characters or more of the source when the
    source is longer, so that a key that starts before the cut is whole here.
    """
    text = redact(text)
    return (text[:limit], True) if len(text) > limit else (text, False)


def clip_head_tail(head: str, tail: str, half: int) -> tuple[str, str]:
    """The first `half` characters of `head` and the last `half` of `tail`, both redacted.

    `head` and `tail` are the start and the end of a longer text, each with
    `margin()` characters more than `half`, so that a key across either cut
    is whole when it is redacted.
    """
    return redact(head)[:half], _last(redact(tail), half)


def _last(text: str, count: int) -> str:
    return text[-count:] if count else ""
