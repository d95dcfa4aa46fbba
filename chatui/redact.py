"""Keeping API keys out of everything chatui shows, stores or sends on.

A key can arrive whole (a proxy's error page echoing the `Authorization`
header, a `.env` file a tool read) or in part: something upstream cut it (a
gateway that shows a header's first 40 characters), or chatui itself cut the
text around it (an error body, a file, a command's output). So a `Redactor`
replaces the whole key and every run of `MIN_FRAGMENT` or more characters
of its random part (runs that mix letters and digits, or cases: not the
words of a placeholder key); and every place that cuts text to a size
(`clip`) redacts first and cuts after, so a cut can never leave a key's
start or end behind. A model's streamed text is redacted as it streams by
`chatui.stream_redact.StreamRedactor`.

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
            grams.setdefault(secret, []).append((secret, 0))
            for start in range(len(secret) - MIN_FRAGMENT + 1):
                gram = secret[start : start + MIN_FRAGMENT]
                if _random_looking(gram):
                    grams.setdefault(gram, []).append((secret, start))
        self._grams = grams
        self._pattern = (
            re.compile("|".join(re.escape(g) for g in sorted(grams, key=len, reverse=True)))
            if grams
            else None
        )
        # A server's own masked echo of a key shows its end after stars
        # ("sk-proj-****…e2b3", OpenAI's 401): that end goes too.
        tails = {s[-n:] for s in self.secrets for n in range(2, MIN_FRAGMENT) if len(s) > n}
        self._tails = (
            re.compile(
                r"\*{3,}(?:\.{3}|…)?(?:"
                + "|".join(re.escape(t) for t in sorted(tails, key=len, reverse=True))
                + r")(?![A-Za-z0-9_-])"
            )
            if tails
            else None
        )

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __call__(self, text: str) -> str:
        """`text` with every key, whole or in part, replaced by `***`."""
        if self._pattern is None or not text:
            return text
        if self._tails is not None and "***" in text:
            text = self._tails.sub(MASK, text)
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

    def start_at_end(self, text: str) -> int:
        """The length of the longest end of `text` that begins a key (but is not all of it)."""
        longest = 0
        for secret in self.secrets:
            at = text.find(secret[0], max(0, len(text) - len(secret) + 1))
            while at != -1 and len(text) - at > longest:
                if secret.startswith(text[at:]):
                    longest = len(text) - at
                    break
                at = text.find(secret[0], at + 1)
        return longest

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


def _random_looking(run: str) -> bool:
    """Whether `run` mixes two of lower case, upper case and digits, as a key's random part does.

    A placeholder key (llama.cpp server's docs use "sk-no-key-required") is
    words: its runs ("required") are everyday text, masked only as the whole key.
    """
    kinds = (str.islower, str.isupper, str.isdigit)
    return sum(any(kind(c) for c in run) for kind in kinds) >= 2


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
