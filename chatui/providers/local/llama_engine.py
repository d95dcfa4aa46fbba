"""One llama.cpp model on one dedicated thread.

`Llama` is not thread-safe, so exactly one thread (the engine's) ever calls
it: loading, every generation, KV-cache rollback, state save and load. Work
is queued to that thread; a cancelled turn's job finishes (its decode
aborted within one micro-batch, its KV transaction rolled back, or its reply
kept uncommitted for a Continue) before the next job starts. Results travel
back through a thread-safe `emit` callable; while the prompt is processed, a
`PromptProgress` event follows every batch.

A disk error while saving KV state never fails a job: it is reported through
`on_notice` (called on the engine thread) and the state is simply not saved.

llama-cpp-python's private API, used in chatui/providers/local/ where the
public API offers no way (name: what it is for; what it relies on; guard).
All of it relies on the pin in pyproject.toml, llama-cpp-python>=0.3.36,<0.4,
and was checked on 0.3.36: moving the pin means running these guards on the
new version first. tests/test_private_api.py fails on any other private name
of llama_cpp used in these files.

- `_init_sampler` (`Llama._init_sampler`, overridden by `CountingLlama`, and
  the `sampler` chain of the `LlamaSampler` it returns, from
  `llama_cpp._internals`): the checked tool grammar goes first in the
  sampler chain; `Llama` would add an unchecked one, whose null sampler
  crashes later. The override also shows a continued reply's tokens so far to
  the new chain (`LlamaSampler.accept`), so its repeat penalty counts them as
  the stopped reply's did. Relies on `Llama.generate` building its sampler
  through this method, with `grammar` passed by keyword. Guard:
  tests/test_private_api.py::test_llama_samples_through_the_override_that_checks_the_grammar,
  tests/test_tool_grammar.py::test_required_calls_follow_the_schemas_even_from_a_random_model
  and tests/test_local_continue.py::test_a_continued_reply_keeps_its_repeat_penalty.
- `_model` (`Llama._model`, the `LlamaModel` of `llama_cpp._internals`): its
  `vocab` for the low-level vocabulary calls (end of generation, a token's
  attributes and text) and its `token_bos`, `token_eos`, `token_get_text` for
  the chat template's special tokens. Relies on the attribute and those
  members; a rename fails every local reply. Guard:
  tests/test_kv_cache.py::test_a_special_token_the_model_wrote_never_stands_for_later_text
  and tests/test_tool_grammar.py::test_a_grammar_that_does_not_compile_is_a_provider_error.
- `_grammar` (the keyword `LlamaGrammar(_grammar=...)` and the attribute
  `LlamaGrammar._grammar`, in tool_grammar.py): `ToolGrammar` is a
  `LlamaGrammar`, so `generate` takes it, made from GBNF text it keeps where
  `LlamaGrammar` keeps it, and compiled with `llama_sampler_init_grammar` to
  be checked. Relies on that constructor and attribute. (`LocalProvider` has
  a method of the same name: the check goes by name.) Guard:
  tests/test_tool_grammar.py::test_a_grammar_that_does_not_compile_is_a_provider_error.
- `model_params`, `_model_params` (`Llama.__init__` assigns
  `self.model_params` and loads the model from it; `CountingLlama` makes it a
  property kept in `_model_params`, chatui's own name): llama.cpp's AMX
  weight buffers are turned off before the load (`safe_model_params`).
  Relies on `__init__` assigning it once, before filling it in, and leaving
  `use_extra_bufts` alone. Guard:
  tests/test_private_api.py::test_llama_builds_the_model_params_it_loads_from_through_the_safe_setter.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar

from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.providers.base import (
    PromptProgress,
    ProviderError,
    StreamEnd,
    StreamEvent,
    TextDelta,
    UsageUpdate,
)
from chatui.providers.local.kv_cache import KVCache
from chatui.providers.local.llama_runtime import (
    AbortFlag,
    quiet_on_this_thread,
    safe_model_params,
    silence_llama_logs,
)
from chatui.providers.local.tool_grammar import ToolGrammar
from chatui.providers.local.tool_markup import ToolCallMarkupParser, new_call_prefix

T = TypeVar("T")
Emit = Callable[[StreamEvent], None]
Notice = Callable[[str], None]
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def generation_threads() -> int:
    """The default number of generation threads: every core but one, left to the UI.

    Measured on 2 cores with the default model: 1 thread generates 22.6
    tokens/s, 2 threads 38.5, but with 2 the UI thread waits for a core and
    Esc → stop on screen goes from p50 22 / p99 33 ms to p50 30 / p99 60 ms
    (`python -m bench.terminal_escape --cases local --n-threads N`). The prompt is
    still read on every core (`n_threads_batch`): a stop aborts it within one
    graph node.
    """
    return max(1, (os.cpu_count() or 2) - 1)


class Aborted(Exception):
    """The job was stopped by its cancel token."""


class CountingLlama(llama_cpp.Llama):
    """`Llama` that counts the tokens it evaluates (what prefix reuse saves).

    It evaluates in batches of `n_batch` (as `Llama.eval` does) and calls
    `on_batch(n_tokens)`, when set, after each one: progress during a prefill.
    """

    evaluated = 0
    on_batch: Callable[[int], None] | None = None
    prime: Sequence[int] = ()  # Tokens the next sampler has already seen (a reply so far).

    # `Llama.__init__` builds its model parameters in this attribute and loads the
    # model from them; the setter is the one place to change them before the load.
    @property
    def model_params(self) -> llama_cpp.llama_model_params:
        return self._model_params

    @model_params.setter
    def model_params(self, params: llama_cpp.llama_model_params) -> None:
        self._model_params = safe_model_params(params)

    def _init_sampler(self, *args: Any, grammar: LlamaGrammar | None = None, **kwargs: Any) -> Any:
        """`Llama`'s sampler chain, with a `ToolGrammar` at its head.

        `Llama` adds a grammar without checking that it compiled (a null
        sampler crashes later). The chain is built without one; its samplers
        are taken out, the checked tool grammar goes first, and they go back
        in order (no custom sampler is in the chain: no logits processor).
        """
        # `Llama` passes every argument by keyword, so `args` is empty and cannot hold a
        # grammar too; it stays in the signature to match the method it overrides.
        if not isinstance(grammar, ToolGrammar):
            sampler = super()._init_sampler(*args, **{**kwargs, "grammar": grammar})
            for token in self.prime:  # A continued reply's repeat penalty counts its start.
                sampler.accept(token)
            return sampler
        head = grammar.sampler(self._model.vocab)  # Raises before the chain is touched.
        sampler = super()._init_sampler(*args, **{**kwargs, "grammar": None})
        chain = sampler.sampler
        rest = [
            llama_cpp.llama_sampler_chain_remove(chain, 0)
            for _ in range(llama_cpp.llama_sampler_chain_n(chain))
        ]
        llama_cpp.llama_sampler_chain_add(chain, head)
        for each in rest:
            llama_cpp.llama_sampler_chain_add(chain, each)
        return sampler

    def eval(self, tokens: Sequence[int]) -> None:
        if not tokens:
            super().eval(tokens)  # Only trims the cache to n_tokens.
            return
        for start in range(0, len(tokens), self.n_batch):
            batch = tokens[start : start + self.n_batch]
            self.evaluated += len(batch)
            super().eval(batch)  # Raises RuntimeError if the abort flag stopped the decode.
            if self.on_batch is not None:
                self.on_batch(self.n_tokens)


@dataclass
class _Reply:
    """A reply as far as it went: what a commit, or a keep after a stop, needs."""

    base_mark: int = 0  # The mark its prompt was built on (`KVCache.tokens_for`).
    prompt_read: bool = False  # The prompt is in the cache: a stop keeps the reply.
    pieces: list[str] = field(default_factory=list)  # Texts of the evaluated reply tokens.
    shown: tuple[int, str] | None = None  # Shown, with its text, not evaluated yet.
    next_token: int | None = None  # Sampled, neither shown nor evaluated (a stop between).
    markup: bool = False  # Some of it was a tool call.


@dataclass
class GenerationJob:
    """One model request for the engine thread."""

    conversation_id: str
    prompt_text: str  # A `chat_format.Prompt`: special tokens only in the template's parts.
    cancel: CancelToken
    emit: Emit
    parse_tools: bool = False
    grammar: ToolGrammar | None = None  # Holds the reply's tool calls to their schemas.
    # A Continue: `prompt_text` ends with the reply so far, after `reply_head` (a Prompt).
    continuing: bool = False
    reply_head: str = ""
    # Filled in by the engine:
    prompt_tokens: int = 0
    prompt_ids: list[int] = field(default_factory=list)
    reused: int = 0  # Prompt tokens found in the KV cache.
    ahead: int = 0  # Reply tokens a Continue took from the kept reply, without a decode.
    prompt_evaluated: int = 0  # Prompt tokens evaluated (what reuse saves shows here).
    evaluated: int = 0  # All tokens evaluated, prompt and reply.
    reply_tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    stopped: str | None = None  # "before start", "in decode" or "between tokens".
    ended_at: float = 0.0  # perf_counter() when the engine let go of the model.


IDENTITY_EDGE = 1 << 20  # Hashed at each end of a model file.
IDENTITY_SAMPLES = 64  # Evenly spaced samples in between ...
IDENTITY_SAMPLE = 1 << 16  # ... of this many bytes.
IDENTITY_WHOLE = 8 << 20  # A file up to this size is hashed whole.


def model_identity(path: Path) -> str:
    """A fingerprint of a model file that changes when its weights do.

    Name, size, mtime, inode and device, and a SHA-256 of the whole file when
    it is small, else of its first and last MiB and 64 evenly spaced 64 KiB
    samples (6 MiB read, whatever the size). Saved KV state is only trusted
    for the same fingerprint.
    """
    digest = hashlib.sha256()
    with path.open("rb") as file:
        info = os.fstat(file.fileno())
        size = info.st_size
        if size <= IDENTITY_WHOLE:
            spans = [(0, size)]
        else:
            step = size // (IDENTITY_SAMPLES + 1)
            middle = [(step * i, IDENTITY_SAMPLE) for i in range(1, IDENTITY_SAMPLES + 1)]
            spans = [(0, IDENTITY_EDGE), *middle, (size - IDENTITY_EDGE, IDENTITY_EDGE)]
        for offset, length in spans:
            file.seek(offset)
            digest.update(file.read(length))
    stamp = f"{size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_dev}"
    return f"{path.name}:{stamp}:{digest.hexdigest()[:32]}"


class LlamaEngine:
    """Owns the model thread. Create, then `load()`; submit jobs with `submit()`."""

    def __init__(
        self,
        config: LocalConfig,
        model_path: Path,
        state_dir: Path | None,
        on_notice: Notice | None = None,
    ) -> None:
        """`on_notice(message)` is called on the engine thread with news for the user."""
        self.config = config
        self.model_path = model_path
        self.state_dir = state_dir
        self.on_notice: Notice = on_notice or (lambda _message: None)
        self._save_error: str | None = None  # The last save failure reported.
        self.llm: CountingLlama | None = None
        self.kv: KVCache | None = None
        self.abort = AbortFlag()
        self.model_id = ""
        self.conversation_id: str | None = None
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="llama", daemon=True)
        self._thread.start()

    # The thread

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the engine thread, after the jobs already queued."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as error:
                future.set_exception(error)

        self._jobs.put(run)
        return future

    def close(self) -> concurrent.futures.Future[None]:
        """Save the open conversation's KV state, free the model, end the thread."""

        def shut() -> None:
            with contextlib.suppress(Exception):
                self.save_state()  # Reports a disk error itself; nothing else may stop the close.
            if self.llm is not None:
                self.llm.close()
                self.llm = self.kv = None

        future = self.call(shut)
        self._jobs.put(None)
        return future

    # Jobs (these run on the engine thread)

    def load(self) -> None:
        """Load the model; raises with a readable message if it cannot."""
        silence_llama_logs()
        model_id = model_identity(self.model_path)
        c = self.config
        # With verbose=False, Llama() points fds 1 and 2 at /dev/null while it loads, which
        # would swallow the UI's own output; logs go to the silent callback instead.
        with quiet_on_this_thread():
            llm = CountingLlama(
                model_path=str(self.model_path),
                n_ctx=c.n_ctx,
                n_batch=c.n_batch,
                n_ubatch=c.n_ubatch,
                n_threads=c.n_threads or generation_threads(),
                seed=c.seed if c.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                swa_full=True,  # Gemma 3: range removal is only correct with the full SWA cache.
                verbose=True,
            )
        llm.verbose = False  # No per-request chatter on stderr.
        if model_identity(self.model_path) != model_id:
            model_id = f"changed while loading {os.urandom(8).hex()}"  # Trust no saved state.
        self.model_id = model_id
        self.abort.install(llm.ctx)
        self.llm, self.kv = llm, KVCache(llm)

    def metadata(self) -> dict[str, str]:
        assert self.llm is not None
        return dict(self.llm.metadata)

    def special_token(self, which: str) -> str:
        """The text of the model's BOS or EOS token ("" if it has none)."""
        assert self.llm is not None
        model = self.llm._model
        token = model.token_bos() if which == "bos" else model.token_eos()
        return "" if token < 0 else model.token_get_text(token)

    def generate(self, job: GenerationJob) -> None:
        """Stream one reply for `job`, inside a KV transaction; runs on the thread.

        A reply stopped after its prompt was read is kept in the cache,
        uncommitted (`KVTransaction.keep`), for a Continue; a Continue stopped
        before that leaves the reply it adopted kept (`put_back`); anything
        else that does not complete rolls back.
        """
        llm, kv = self.llm, self.kv
        assert llm is not None and kv is not None
        self._switch_conversation(job.conversation_id)
        self.abort.clear()
        unregister = job.cancel.on_cancel(self.abort.set)
        evaluated_before = llm.evaluated
        reply = _Reply()
        try:
            with kv.begin(continuing=job.continuing) as transaction:
                try:
                    self._generate(job, llm, kv, reply)
                except (Aborted, RuntimeError):
                    if self.abort.is_set() and reply.prompt_read:
                        transaction.keep(
                            job.prompt_text,
                            job.prompt_tokens,
                            reply.base_mark,
                            reply.pieces,
                            shown=reply.shown,
                            next_token=reply.next_token,
                            markup=reply.markup,
                        )
                    elif self.abort.is_set():  # A Continue stopped before it read anything.
                        transaction.put_back()
                    raise
                transaction.commit(
                    job.prompt_text, job.prompt_tokens, reply.base_mark, reply.pieces
                )
        except Aborted as stop:
            job.stopped = str(stop)
        except RuntimeError:
            if not self.abort.is_set():
                raise
            job.stopped = "in decode"  # llama_decode returned 2: stopped between graph nodes.
        finally:
            llm.on_batch = None
            llm.prime = ()
            unregister()
            self.abort.clear()
            job.evaluated = llm.evaluated - evaluated_before
            if not job.prompt_evaluated and not job.reply_tokens:
                job.prompt_evaluated = job.evaluated
            job.ended_at = time.perf_counter()

    def _generate(self, job: GenerationJob, llm: CountingLlama, kv: KVCache, reply: _Reply) -> None:
        """Stream the reply, noting in `reply` what a commit or a keep needs."""
        c = self.config
        if job.cancel.cancelled:
            raise Aborted("before start")
        tokens, reply.base_mark = kv.tokens_for(job.prompt_text)
        job.prompt_tokens, job.prompt_ids = len(tokens), list(tokens)
        room = kv.capacity() - len(tokens)
        if room <= 1:
            raise ProviderError(
                f"the conversation ({len(tokens)} tokens) no longer fits the model's context "
                f"({kv.capacity()} tokens): start a new conversation or raise local.n_ctx"
            )
        limit = min(c.max_tokens, room - 1)
        ahead = self._ahead(job, kv, tokens)[:limit]
        if job.continuing and job.grammar is None:
            llm.prime = self._reply_so_far(job, kv, tokens) + ahead
        job.reused, job.ahead = min(kv.prepare(tokens + ahead), len(tokens)), len(ahead)
        job.emit(UsageUpdate(len(tokens), 0))
        job.emit(PromptProgress(job.reused, len(tokens)))
        llm.on_batch = lambda done: job.emit(PromptProgress(done, len(tokens)))
        evaluated_before = llm.evaluated
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        parser = ToolCallMarkupParser(id_prefix=new_call_prefix()) if job.parse_tools else None
        last_piece = ""
        finish = "length"
        context = list(tokens)  # generate() may modify the list it is given.
        sampled = llm.generate(
            tokens + ahead,
            temp=c.temperature,
            top_k=c.top_k,
            top_p=c.top_p,
            repeat_penalty=c.repeat_penalty,
            reset=True,
            grammar=job.grammar,
        )
        for n, token in enumerate(itertools.chain(ahead, sampled)):
            if not reply.prompt_read:  # The prompt is processed.
                reply.prompt_read = True
                llm.on_batch = None
                job.prompt_evaluated = llm.evaluated - evaluated_before
            else:
                reply.pieces.append(last_piece)  # generate() evaluated the previous token.
            reply.shown = None
            if n >= len(ahead) and self.abort.is_set():  # The tokens ahead take no decode.
                reply.next_token = token
                raise Aborted("between tokens")
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            job.reply_tokens.append(token)
            last_piece = decoder.decode(llm.detokenize([token], prev_tokens=context))
            context.append(token)
            reply.shown = (token, last_piece)  # Until generate() evaluates it.
            if last_piece:
                reply.markup |= self._emit_text(job, parser, last_piece)
            if len(job.reply_tokens) >= limit:
                break
        # A reply cut at max_tokens inside a character shows none of it (not U+FFFD):
        # its bytes are in no mark, so a Continue writes the character whole.
        tail = decoder.decode(b"", final=True) if finish == "stop" else ""
        if tail:
            self._emit_text(job, parser, tail)
        if parser is not None:
            for event in parser.finish():
                job.emit(event)
        job.finish = finish
        job.emit(UsageUpdate(job.prompt_tokens, len(job.reply_tokens)))
        job.emit(StreamEnd("stop" if finish == "stop" else "length"))

    @staticmethod
    def _ahead(job: GenerationJob, kv: KVCache, tokens: list[int]) -> list[int]:
        """Reply tokens a Continue starts with, known without a decode.

        The kept reply holds what its model sampled after `tokens`, when they
        are a prefix of its own: the token sampled after its last evaluated
        one, and the tokens sampled and evaluated before the stop reached the
        screen. They are the reply's next tokens, as if generated again. Not
        after tool-call markup: a call cut off is written anew, if at all.
        """
        kept = kv.adopted()
        if kept is None or kept.markup or job.grammar is not None:
            return []
        if kept.tokens[: len(tokens)] != tokens:
            return []
        following = [] if kept.next_token is None else [kept.next_token]
        return kept.tokens[len(tokens) :] + following

    @staticmethod
    def _reply_so_far(job: GenerationJob, kv: KVCache, tokens: list[int]) -> list[int]:
        """The tokens of a continued reply so far: those of `tokens` after its head."""
        head = kv.tokens_for(job.reply_head)[0] if job.reply_head else tokens
        return tokens[len(head) :] if tokens[: len(head)] == head else []

    @staticmethod
    def _emit_text(job: GenerationJob, parser: ToolCallMarkupParser | None, text: str) -> bool:
        """Emit `text` as text or tool-call events; True if it made any of the latter."""
        if parser is None:
            job.emit(TextDelta(text))
            return False
        events = parser.feed(text)
        for event in events:
            job.emit(event)
        return any(not isinstance(event, TextDelta) for event in events)

    # Persisted KV state

    def _state_path(self, conversation_id: str) -> Path | None:
        if self.state_dir is None or not _SAFE_NAME.fullmatch(conversation_id):
            return None
        return self.state_dir / f"{conversation_id}.kv"

    def _switch_conversation(self, conversation_id: str) -> None:
        """Save the open conversation's state and load the next one's, if saved.

        A reply kept for a Continue in the open conversation is rolled back.

        Neither a failed save nor an unreadable state file stops the switch:
        the cache then simply has less to reuse.
        """
        if conversation_id == self.conversation_id:
            return
        self.save_state()
        self.conversation_id = conversation_id
        path = self._state_path(conversation_id)
        if path is not None:
            self._resume(path)

    def _resume(self, path: Path) -> None:
        """Load the state saved at `path`, if any; delete it if it is stale or corrupt."""
        assert self.kv is not None
        try:
            if not path.exists():
                return
        except OSError:  # An unreadable state dir: nothing to resume.
            return
        if not self.kv.load(path, self.model_id):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def save_state(self) -> None:
        """Save the open conversation's committed KV state (engine thread only).

        A reply kept for a Continue is rolled back first, saved or not: the
        user has moved on (another conversation, or quitting).

        Never raises for a disk error (a full disk, an unwritable dir): the
        state is not saved, and the failure is reported through `on_notice`
        once, until a save succeeds again.
        """
        if self.kv is None:
            return
        self.kv.discard()
        if self.conversation_id is None:
            return
        path = self._state_path(self.conversation_id)
        if path is None:
            return
        try:
            self.kv.save(path, self.model_id)
        except OSError as error:
            message = (
                f"Could not save the model's cache for this conversation in {path.parent}: "
                f"{error.strerror or error}. The next visit re-reads it."
            )
            if message != self._save_error:
                self._save_error = message
                self.on_notice(message)
        else:
            self._save_error = None
