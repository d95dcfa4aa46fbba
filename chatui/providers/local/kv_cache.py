"""The local KV-cache transaction: the single owner of the llama.cpp cache state.

`KVCache` knows which tokens of sequence 0 are the *committed* conversation,
and *marks*: points where a prefix of the committed tokens is known to stand
for a prefix of the prompt text (the end of each prompt, and each generated
reply token). A turn is a transaction on it:

    with cache.begin() as tx:       # notes the committed length
        ... evaluate prompt and reply ...
        tx.commit(prompt_text, pieces)  # the reply completed: its tokens are committed
    # leaving the block without commit() rolls back: everything after the
    # committed length is removed from the KV cache and from the Llama object's
    # token bookkeeping, whether the turn was stopped, failed or raised.

Rollback is idempotent and a no-op after commit. Committed state can be saved
to disk (atomically: temp file, fsync, rename) and loaded back; a missing,
stale or corrupt file is refused, never trusted.

All methods must run on the thread that drives the `Llama` object.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import llama_cpp

STATE_MAGIC = b"CHATUI-KV\x01"


class LlamaLike(Protocol):
    """What the cache needs of `llama_cpp.Llama`."""

    n_tokens: int
    input_ids: Any
    ctx: Any

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]: ...

    def detokenize(
        self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False
    ) -> bytes: ...

    def n_ctx(self) -> int: ...


class KVCache:
    """The committed conversation held in the llama.cpp context (sequence 0)."""

    def __init__(self, llm: LlamaLike) -> None:
        self.llm = llm
        self.committed: list[int] = []
        self.committed_text = ""
        # (tokens, chars): committed[:tokens] stands for committed_text[:chars].
        self.marks: list[tuple[int, int]] = [(0, 0)]
        self._open: KVTransaction | None = None

    # Prompt tokens

    def tokens_for(self, prompt_text: str) -> tuple[list[int], int]:
        """Token ids for `prompt_text` and the mark they were built on.

        The committed ids are reused up to the last mark inside the text that
        `prompt_text` shares with the committed text; only the rest is
        tokenized. Re-tokenizing a reply's text can give other ids than those
        generated, so keeping the generated ids is what lets the next prompt
        match the cache exactly.
        """
        # Character by character is what is wanted here, not path components.
        shared = len(os.path.commonprefix((self.committed_text, prompt_text)))  # noqa: RUF071
        tokens, chars = max((m for m in self.marks if m[1] <= shared), default=(0, 0))
        ids = self.committed[:tokens] + self._tokenize(prompt_text[chars:], add_bos=False)
        return ids, self.marks.index((tokens, chars))

    def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return (
            self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True) if text else []
        )

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

    def begin(self) -> KVTransaction:
        """Start a turn. The cache must hold exactly the committed tokens."""
        if self._open is not None:
            raise RuntimeError("a KV transaction is already open")
        self.truncate(min(self.llm.n_tokens, len(self.committed)))
        self._open = KVTransaction(self, len(self.committed))
        return self._open

    def truncate(self, length: int) -> None:
        """Drop every cached token from position `length` on."""
        length = min(length, self.llm.n_tokens)
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        llama_cpp.llama_memory_seq_rm(memory, 0, length, -1)
        self.llm.n_tokens = length
        if length < len(self.committed):
            self.committed = self.committed[:length]
            self.marks = [m for m in self.marks if m[0] <= length]
            self.committed_text = self.committed_text[: self.marks[-1][1]]

    def _commit(
        self, prompt_text: str, prompt_tokens: int, base_mark: int, pieces: list[str] | None
    ) -> None:
        self.committed = list(map(int, self.llm.input_ids[: self.llm.n_tokens]))
        marks = self.marks[: base_mark + 1]
        marks.append((prompt_tokens, len(prompt_text)))
        text = prompt_text
        for n, piece in enumerate(pieces or (), start=prompt_tokens + 1):
            if n > len(self.committed):
                break
            text += piece
            if piece:  # An empty piece may be half a character: no mark inside it.
                marks.append((n, len(text)))
        self.marks, self.committed_text = marks, text
        self._open = None

    def _rollback(self, length: int) -> None:
        self.truncate(min(length, len(self.committed)))
        self._open = None

    # Persistence

    def save(self, path: Path, model_id: str) -> bool:
        """Write the committed state to `path` atomically. False if there is none."""
        if not self.committed or self.llm.n_tokens < len(self.committed):
            return False
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
                "text": self.committed_text,
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
        tokens = header.get("tokens")
        valid = (
            header.get("model") == model_id
            and header.get("n_ctx") == self.llm.n_ctx()
            and isinstance(tokens, list)
            and 0 < len(tokens) < self.llm.n_ctx()
            and all(isinstance(t, int) for t in tokens)
            and isinstance(header.get("text"), str)
            and _valid_marks(header.get("marks"), len(tokens), len(header["text"]))
            and header.get("blob_sha256") == hashlib.sha256(blob).hexdigest()
        )
        if not valid:
            return False
        self.truncate(0)
        source = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if llama_cpp.llama_state_seq_set_data(self.llm.ctx, source, len(blob), 0) != len(blob):
            self.truncate(0)
            return False
        self.llm.input_ids[: len(tokens)] = tokens
        self.llm.n_tokens = len(tokens)
        self.committed, self.committed_text = list(tokens), header["text"]
        self.marks = [(t, c) for t, c in header["marks"]]
        return True


class KVTransaction:
    """One turn's changes to the cache: `commit()` keeps them, anything else drops them."""

    def __init__(self, cache: KVCache, base: int) -> None:
        self.cache = cache
        self.base = base
        self.state = "open"

    def commit(
        self,
        prompt_text: str,
        prompt_tokens: int,
        base_mark: int = 0,
        pieces: list[str] | None = None,
    ) -> None:
        """The reply completed: the cached tokens become the committed conversation.

        `prompt_text` is the prompt the reply answered, `prompt_tokens` its
        length in tokens, built on mark `base_mark` (from `tokens_for`);
        `pieces` are the texts of the reply tokens in the cache, in order
        (None when they do not map to text exactly).
        """
        if self.state != "open":
            raise RuntimeError(f"cannot commit a transaction that is {self.state}")
        self.cache._commit(prompt_text, prompt_tokens, base_mark, pieces)
        self.state = "committed"

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
