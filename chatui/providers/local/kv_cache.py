"""The local KV-cache transaction: the single owner of the llama.cpp cache state.

`KVCache` knows which tokens of sequence 0 are the *committed* conversation,
and *marks*: points where a prefix of the committed tokens is known to stand
for a prefix of the prompt's *key* (the end of each prompt, and each generated
reply token). A turn is a transaction on it:

    with cache.begin() as tx:       # notes the committed length
        ... evaluate prompt and reply ...
        tx.commit(prompt, prompt_tokens, base_mark, pieces)  # the reply completed
    # leaving the block without commit() rolls back: everything after the
    # committed length is removed from the KV cache and from the Llama object's
    # token bookkeeping, whether the turn was stopped, failed or raised.

Rollback is idempotent and a no-op after commit. Committed state can be saved
to disk (atomically: temp file, fsync, rename) and loaded back; a missing,
stale or corrupt file is refused, never trusted.

A reply stopped after its prompt was read can be *kept* instead (`tx.keep`):
its evaluated tokens stay in the cache as an uncommitted tail, a `Savepoint`,
so that a Continue need not evaluate them again. The next transaction decides:
`begin(continuing=True)` adopts the tail (its prompt is matched against the
tail, and `commit()` makes it committed; a rollback drops it with the rest,
back to the last commit, but a Continue stopped before it read its prompt
puts it back, `tx.put_back()`), while any other `begin()`, `discard()`,
`save()`, `load()` or truncation rolls it back first. The committed state, and
what is saved to disk, never include it.

Special tokens (turn markers like `<start_of_turn>`: llama.cpp's control
tokens) come only from the chat template's own text. A `Prompt` says which of
its parts the template wrote; the rest (message contents: the user's text,
tool results, the model's replies) is tokenized as text, whatever it spells.
The key is the prompt as the tokens see it: its text, with each special token
written as a pair of surrogate code points, which no text can contain. So a
content that spells `<end_of_turn>` never matches a real one in the cache.
Template text and contents between two special tokens are tokenized in one
piece, exactly as llama.cpp would tokenize the whole prompt, so a prompt whose
contents spell no marker gets the very same tokens as before.

All methods must run on the thread that drives the `Llama` object.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import llama_cpp

STATE_MAGIC = b"CHATUI-KV\x02"  # 2: keys set special tokens apart from text.

SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
"""Tokens that are markup: llama.cpp reads them only where `special=True`."""
_C_SPACE = " \t\n\v\f\r"  # What llama.cpp strips beside an lstrip/rstrip token (isspace).
_SPECIAL_KEY = re.compile("([\ud800-\udbff][\udc00-\udfff])")
_SURROGATE = re.compile("[\ud800-\udfff]")


class LlamaLike(Protocol):
    """What the cache needs of `llama_cpp.Llama`."""

    n_tokens: int
    input_ids: Any
    _model: Any  # Its `vocab`: token attributes and texts.

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]: ...

    def detokenize(
        self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False
    ) -> bytes: ...

    def n_ctx(self) -> int: ...

    @property
    def ctx(self) -> Any: ...  # `Llama.ctx` is a read-only property.


@dataclass
class Savepoint:
    """A stopped reply kept in the cache, uncommitted, for a Continue to adopt.

    `tokens`, `key` and `marks` are as for the committed state, and cover it,
    the stopped request's prompt and its reply so far: the first `cached` of
    the tokens are in the cache, and one more may follow that was shown but
    whose decode the stop aborted. `next_token` was sampled after the last
    cached token but neither evaluated nor shown (a stop between tokens): a
    Continue whose prompt is exactly `tokens` starts with it, without a decode.
    `markup`: some of the reply was tool-call markup.
    """

    tokens: list[int]
    key: str
    marks: list[tuple[int, int]]
    cached: int
    next_token: int | None = None
    markup: bool = False


class KVCache:
    """The committed conversation held in the llama.cpp context (sequence 0)."""

    def __init__(self, llm: LlamaLike) -> None:
        self.llm = llm
        self.committed: list[int] = []
        self.committed_key = ""
        # (tokens, chars): committed[:tokens] stands for committed_key[:chars].
        self.marks: list[tuple[int, int]] = [(0, 0)]
        self.savepoint: Savepoint | None = None  # A stopped reply's uncommitted tail.
        self._open: KVTransaction | None = None
        self._attrs: dict[int, int] = {}
        self._markup_cache: dict[str, list[str | int]] = {}

    # Prompt tokens

    def tokens_for(self, prompt: str) -> tuple[list[int], int]:
        """Token ids for `prompt` and the mark they were built on.

        The committed ids are reused up to the last mark inside the key that
        `prompt` shares with the committed key; only the rest is tokenized.
        Re-tokenizing a reply's text can give other ids than those generated,
        so keeping the generated ids is what lets the next prompt match the
        cache exactly.
        """
        key = self.key(prompt)
        known, known_key, marks = self._view()
        # Character by character is what is wanted here, not path components.
        shared = len(os.path.commonprefix((known_key, key)))  # noqa: RUF071
        tokens, chars = max((m for m in marks if m[1] <= shared), default=(0, 0))
        ids = known[:tokens] + self._tokenize_key(key[chars:])
        return ids, marks.index((tokens, chars))

    def _view(self) -> tuple[list[int], str, list[tuple[int, int]]]:
        """The tokens, key and marks prompts are matched against: the committed
        conversation, or the kept reply the open transaction adopted."""
        adopted = self._open.adopted if self._open is not None else None
        if adopted is not None:
            return adopted.tokens, adopted.key, adopted.marks
        return self.committed, self.committed_key, self.marks

    def adopted(self) -> Savepoint | None:
        """The kept reply the open transaction continues, if any."""
        return self._open.adopted if self._open is not None else None

    def key(self, prompt: str) -> str:
        """`prompt` as the cache compares it: its text, with special tokens set apart.

        Special tokens are read only in the template's own text (a `Prompt`'s
        segments; all of a plain `str`, which only code writes).
        """
        runs: list[str | int] = []  # Texts and special tokens, no two texts in a row.
        for text, from_template in getattr(prompt, "segments", ((prompt, True),)):
            for part in self._markup(text) if from_template else (_text(text),):
                if isinstance(part, str) and runs and isinstance(runs[-1], str):
                    runs[-1] += part
                elif part != "":
                    runs.append(part)
        self._strip_beside(runs)
        return "".join(_special_key(p) if isinstance(p, int) else p for p in runs)

    def _markup(self, text: str) -> list[str | int]:
        """Template text split at the special tokens llama.cpp reads in it."""
        text = _text(text)
        parts = self._markup_cache.get(text)
        if parts is None:
            parts, at = [], 0
            for token in self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True):
                spelled = self._spelling(token) if self._is_special(token) else ""
                found = text.find(spelled, at) if spelled else -1
                if found >= 0:
                    parts += [text[at:found], token]
                    at = found + len(spelled)
            parts.append(text[at:])
            if len(self._markup_cache) > 1024:
                self._markup_cache.clear()
            self._markup_cache[text] = parts
        return parts

    def _strip_beside(self, runs: list[str | int]) -> None:
        """Drop the whitespace llama.cpp drops beside tokens marked lstrip or rstrip."""
        for i, part in enumerate(runs):
            if isinstance(part, str):
                continue
            attr = self._attr(part)
            if attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP and i > 0 and isinstance(runs[i - 1], str):
                runs[i - 1] = str(runs[i - 1]).rstrip(_C_SPACE)
            after = i + 1 < len(runs) and isinstance(runs[i + 1], str)
            if attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP and after:
                runs[i + 1] = str(runs[i + 1]).lstrip(_C_SPACE)

    def _tokenize_key(self, key: str) -> list[int]:
        ids: list[int] = []
        for n, part in enumerate(_SPECIAL_KEY.split(key)):
            if n % 2:
                ids.append(_special_of(part))
            elif part:
                ids += self._tokenize_text(part)
        return ids

    def _tokenize_text(self, text: str) -> list[int]:
        """`text` as text: llama.cpp reads no control token where `special=False`.

        (Not even one that is also user-defined, like Gemma's `</s>`.)
        """
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _attr(self, token: int) -> int:
        attr = self._attrs.get(token)
        if attr is None:
            attr = self._attrs[token] = llama_cpp.llama_vocab_get_attr(self.llm._model.vocab, token)
        return attr

    def _is_special(self, token: int) -> bool:
        return bool(self._attr(token) & SPECIAL)

    def _spelling(self, token: int) -> str:
        text = llama_cpp.llama_vocab_get_text(self.llm._model.vocab, token)
        return (text or b"").decode("utf-8", errors="replace")

    def capacity(self) -> int:
        """How many tokens the context holds: llama.cpp rounds the context up (to a
        multiple of 256), but the `Llama` object keeps the ids of only as many as
        it was asked for, and a token past those would be cached but not known."""
        return min(self.llm.n_ctx(), len(self.llm.input_ids))

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading `tokens` are already in the cache."""
        cached = self.llm.input_ids[: self.llm.n_tokens]
        n = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def prepare(self, tokens: list[int]) -> int:
        """Make the cache ready for a prompt; returns how many tokens will be reused.

        At least one prompt token is always evaluated, so sampling never reads
        logits left over from an earlier, longer sequence.
        """
        reuse = min(self.cached_prefix(tokens), len(tokens) - 1)
        if reuse < self.llm.n_tokens:
            self.truncate(max(reuse, 0))
        return max(reuse, 0)

    # Transactions

    def begin(self, continuing: bool = False) -> KVTransaction:
        """Start a turn; a `continuing` one adopts the kept reply, any other drops it.

        Either way the cache then holds the committed tokens, and for a
        continuing turn the kept reply's after them.
        """
        if self._open is not None:
            raise RuntimeError("a KV transaction is already open")
        kept, self.savepoint = self.savepoint, None
        if not continuing or kept is None or self.llm.n_tokens != kept.cached:
            kept = None
            self.discard()
        self._open = KVTransaction(self, len(self.committed), kept)
        return self._open

    def discard(self) -> None:
        """Roll a kept reply back: the cache holds the committed conversation alone."""
        self.truncate(len(self.committed))

    def truncate(self, length: int) -> None:
        """Drop every cached token from position `length` on (and any kept reply)."""
        self.savepoint = None
        length = min(length, self.llm.n_tokens)
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, length, -1)
        self.llm.n_tokens = length
        if length < len(self.committed):
            self.committed = self.committed[:length]
            self.marks = [m for m in self.marks if m[0] <= length]
            self.committed_key = self.committed_key[: self.marks[-1][1]]

    def _record(
        self, prompt: str, prompt_tokens: int, base_mark: int, pieces: list[str] | None
    ) -> tuple[list[int], str, list[tuple[int, int]]]:
        """The cached tokens after a reply to `prompt`, with their key and marks."""
        tokens = list(map(int, self.llm.input_ids[: self.llm.n_tokens]))
        marks = self._view()[2][: base_mark + 1]
        key = self.key(prompt)
        marks.append((prompt_tokens, len(key)))
        for n, piece in enumerate(pieces or (), start=prompt_tokens + 1):
            if n > len(tokens):
                break
            key = self._extend(key, marks, n, tokens[n - 1], piece)
        return tokens, key, marks

    def _extend(
        self, key: str, marks: list[tuple[int, int]], n: int, token: int, piece: str
    ) -> str:
        """`key` with the `n`-th token, a reply token whose text is `piece`; marks it."""
        # A special token the model wrote is one in the key too: it shows no text, and
        # must never stand for the text of a later prompt.
        special = self._is_special(token)
        key += _special_key(token) if special else _text(piece)
        if special or piece:  # An empty piece may be half a character: no mark inside it.
            marks.append((n, len(key)))
        return key

    def _commit(
        self, prompt: str, prompt_tokens: int, base_mark: int, pieces: list[str] | None
    ) -> None:
        self.committed, self.committed_key, self.marks = self._record(
            prompt, prompt_tokens, base_mark, pieces
        )
        self._open = None

    def _keep(
        self,
        prompt: str,
        prompt_tokens: int,
        base_mark: int,
        pieces: list[str],
        shown: tuple[int, str] | None,
        next_token: int | None,
        markup: bool,
    ) -> None:
        # A decode the stop aborted may have left cells past n_tokens.
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, self.llm.n_tokens, -1)
        tokens, key, marks = self._record(prompt, prompt_tokens, base_mark, pieces)
        cached = len(tokens)
        if shown is not None and cached == prompt_tokens + len(pieces):  # It comes next.
            tokens.append(shown[0])
            key = self._extend(key, marks, len(tokens), *shown)
        self._open = None
        self.savepoint = Savepoint(tokens, key, marks, cached, next_token, markup)

    def _rollback(self, length: int) -> None:
        self.truncate(min(length, len(self.committed)))
        self._open = None

    def _put_back(self, length: int) -> bool:
        """Keep the adopted reply again if the cache still holds it all; else roll back."""
        kept = self.adopted()
        cached = kept.cached if kept is not None else 0
        if kept is None or self.cached_prefix(kept.tokens[:cached]) < cached:
            self._rollback(length)
            return False
        # Drop what the stopped turn read past it, and any cells its aborted decode left.
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, cached, -1)
        self.llm.n_tokens = cached
        self._open = None
        self.savepoint = kept
        return True

    # Persistence

    def save(self, path: Path, model_id: str) -> bool:
        """Write the committed state to `path` atomically. False if there is none.

        A kept reply is rolled back first: llama.cpp writes the whole sequence.
        """
        if not self.committed or self.llm.n_tokens < len(self.committed):
            return False
        self.discard()
        ctx = self.llm.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        blob = bytes(buffer[:written])
        header = json.dumps(
            {
                "model": model_id,
                "n_ctx": self.llm.n_ctx(),
                "tokens": self.committed,
                "key": _key_to_json(self.committed_key),
                "marks": self.marks,
                "blob_sha256": hashlib.sha256(blob).hexdigest(),
            }
        ).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(STATE_MAGIC + struct.pack("<Q", len(header)) + header + blob)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return True

    def load(self, path: Path, model_id: str) -> bool:
        """Restore committed state saved by `save()`; False (cache emptied) if unusable."""
        try:
            data = path.read_bytes()
            header, blob = _parse_state(data)
        except (OSError, ValueError):
            return False
        tokens, key = header.get("tokens"), _key_from_json(header.get("key"))
        if not (
            header.get("model") == model_id
            and header.get("n_ctx") == self.llm.n_ctx()
            and isinstance(tokens, list)
            and 0 < len(tokens) < self.capacity()
            and all(isinstance(t, int) for t in tokens)
            and key is not None
            and _valid_marks(header.get("marks"), len(tokens), len(key))
            and header.get("blob_sha256") == hashlib.sha256(blob).hexdigest()
        ):
            return False
        self.truncate(0)
        source = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if llama_cpp.llama_state_seq_set_data(self.llm.ctx, source, len(blob), 0) != len(blob):
            self.truncate(0)
            return False
        self.llm.input_ids[: len(tokens)] = tokens
        self.llm.n_tokens = len(tokens)
        self.committed, self.committed_key = list(tokens), key
        self.marks = [(t, c) for t, c in header["marks"]]
        return True


class KVTransaction:
    """One turn's changes to the cache: `commit()` keeps them, `keep()` sets them
    aside for a Continue, anything else drops them."""

    def __init__(self, cache: KVCache, base: int, adopted: Savepoint | None = None) -> None:
        self.cache = cache
        self.base = base
        self.adopted = adopted  # The kept reply this transaction continues.
        self.state = "open"

    def commit(
        self,
        prompt: str,
        prompt_tokens: int,
        base_mark: int = 0,
        pieces: list[str] | None = None,
    ) -> None:
        """The reply completed: the cached tokens become the committed conversation.

        `prompt` is the prompt the reply answered, `prompt_tokens` its
        length in tokens, built on mark `base_mark` (from `tokens_for`);
        `pieces` are the texts of the reply tokens in the cache, in order
        (None when they do not map to text exactly).
        """
        if self.state != "open":
            raise RuntimeError(f"cannot commit a transaction that is {self.state}")
        self.cache._commit(prompt, prompt_tokens, base_mark, pieces)
        self.state = "committed"

    def keep(
        self,
        prompt: str,
        prompt_tokens: int,
        base_mark: int,
        pieces: list[str],
        *,
        shown: tuple[int, str] | None = None,
        next_token: int | None = None,
        markup: bool = False,
    ) -> None:
        """The reply was stopped after its prompt was read: keep it as the cache's savepoint.

        Arguments as for `commit()`; `pieces` are the texts of the evaluated
        reply tokens. `shown` is a reply token shown whose decode the stop
        aborted, with its text; `next_token` one sampled after the last
        evaluated token, neither evaluated nor shown; `markup`: the reply
        wrote tool-call markup. Nothing is committed: the next transaction
        adopts the kept reply or rolls it back.
        """
        if self.state != "open":
            raise RuntimeError(f"cannot keep a transaction that is {self.state}")
        self.cache._keep(prompt, prompt_tokens, base_mark, pieces, shown, next_token, markup)
        self.state = "kept"

    def put_back(self) -> None:
        """A Continue was stopped before it read its prompt: the kept reply it adopted
        stays kept, for the next Continue, as if this one had never begun.

        Without a kept reply (or if the cache no longer holds all of it) this
        is a rollback. A failure rolls back instead: the cache may be unsound.
        """
        if self.state == "open":
            kept = self.cache._put_back(self.base)
            self.state = "kept" if kept else "rolled back"

    def rollback(self) -> None:
        """Remove everything after the committed length. Idempotent; no-op after commit."""
        if self.state == "open":
            self.cache._rollback(self.base)
            self.state = "rolled back"

    def __enter__(self) -> KVTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()


def _parse_state(data: bytes) -> tuple[dict[str, Any], bytes]:
    head = len(STATE_MAGIC) + 8
    if len(data) < head or not data.startswith(STATE_MAGIC):
        raise ValueError("not a chatui KV state file")
    (length,) = struct.unpack("<Q", data[len(STATE_MAGIC) : head])
    if head + length > len(data):
        raise ValueError("truncated KV state file")
    header = json.loads(data[head : head + length])
    if not isinstance(header, dict):
        raise ValueError("bad KV state header")
    return header, data[head + length :]


def _valid_marks(marks: Any, tokens: int, chars: int) -> bool:
    if not isinstance(marks, list) or not marks:
        return False
    pairs = [m for m in marks if isinstance(m, list) and len(m) == 2]
    return (
        len(pairs) == len(marks)
        and all(isinstance(t, int) and isinstance(c, int) for t, c in pairs)
        and all(0 <= t <= tokens and 0 <= c <= chars for t, c in pairs)
        and pairs == sorted(pairs)
    )


def _text(text: str) -> str:
    """`text` as it is tokenized: a lone surrogate (which UTF-8 cannot hold) becomes U+FFFD.

    This also keeps surrogates in a key for special tokens alone.
    """
    return _SURROGATE.sub("\ufffd", text)


def _special_key(token: int) -> str:
    """A special token in a key: a surrogate pair, for token ids below 2**20."""
    return chr(0xD800 + (token >> 10)) + chr(0xDC00 + (token & 0x3FF))


def _special_of(key: str) -> int:
    return ((ord(key[0]) - 0xD800) << 10) | (ord(key[1]) - 0xDC00)


def _key_to_json(key: str) -> list[str | int]:
    """A key as JSON keeps it: texts, and special tokens as ids.

    (JSON would read a surrogate pair back as one character.)
    """
    parts = _SPECIAL_KEY.split(key)
    return [_special_of(p) if n % 2 else p for n, p in enumerate(parts) if p]


def _key_from_json(parts: Any) -> str | None:
    """The key saved by `_key_to_json`, or None if `parts` is not one."""
    if not isinstance(parts, list):
        return None
    key = ""
    for part in parts:
        if isinstance(part, str) and not _SURROGATE.search(part):
            key += part
        elif type(part) is int and 0 <= part < 1 << 20:
            key += _special_key(part)
        else:
            return None
    return key
