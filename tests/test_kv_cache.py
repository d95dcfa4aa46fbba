"""The KV-cache transaction on a real llama.cpp context (tiny model)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import llama_cpp
import pytest

from chatui.providers.local.chat_format import Prompt
from chatui.providers.local.kv_cache import KVCache
from chatui.providers.local.llama_runtime import silence_llama_logs
from tests.support.tiny_gguf import END_OF_TURN_ID, START_OF_TURN_ID, write_tiny_model


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> llama_cpp.Llama:
    silence_llama_logs()
    path = write_tiny_model(tmp_path_factory.mktemp("kv") / "tiny.gguf")
    model = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=64, verbose=False)
    yield model
    model.close()


def top(llm: llama_cpp.Llama) -> int:
    """One past the last position held in the KV cache (0 when empty)."""
    return llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llm.ctx), 0) + 1


@pytest.fixture
def cache(llm: llama_cpp.Llama) -> KVCache:
    kv = KVCache(llm)
    kv.truncate(0)
    return kv


def tokens(llm: llama_cpp.Llama, text: str) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def test_commit_keeps_the_reply_and_marks_its_text(cache: KVCache, llm) -> None:
    prompt = tokens(llm, "<start_of_turn>user\nhi<end_of_turn>\n")
    with cache.begin() as tx:
        llm.eval(prompt)
        llm.eval(tokens(llm, "ab"))
        tx.commit("P" * 10, len(prompt), 0, ["a", "b"])

    assert len(cache.committed) == llm.n_tokens == top(llm) == len(prompt) + 2
    assert cache.marks[-1] == (len(prompt) + 2, 12)
    assert tx.state == "committed"


def test_rollback_is_idempotent_and_restores_the_committed_state(cache: KVCache, llm) -> None:
    first = tokens(llm, "committed part")
    with cache.begin() as tx:
        llm.eval(first)
        tx.commit("committed part", len(first))
    before = (llm.n_tokens, top(llm), list(cache.committed))

    tx = cache.begin()
    llm.eval(tokens(llm, " and a reply that is stopped"))
    assert llm.n_tokens > before[0]
    tx.rollback()
    tx.rollback()

    assert (llm.n_tokens, top(llm), list(cache.committed)) == before
    assert tx.state == "rolled back"


def test_rollback_after_commit_is_a_no_op(cache: KVCache, llm) -> None:
    with cache.begin() as tx:
        llm.eval(tokens(llm, "kept"))
        tx.commit("kept", 4)
    state = (llm.n_tokens, top(llm))
    tx.rollback()

    assert (llm.n_tokens, top(llm)) == state
    with pytest.raises(RuntimeError):
        tx.commit("again", 5)


def test_an_exception_rolls_back(cache: KVCache, llm) -> None:
    with pytest.raises(ValueError), cache.begin():
        llm.eval(tokens(llm, "half a turn"))
        raise ValueError("the turn failed")

    assert llm.n_tokens == top(llm) == 0
    assert cache._open is None


def test_tokens_for_reuses_ids_up_to_the_last_mark(cache: KVCache, llm) -> None:
    prompt_text = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    prompt = tokens(llm, prompt_text)
    generated = [ord("t"), ord("h"), ord("e")]  # Three byte tokens, though "the" is one token.
    with cache.begin() as tx:
        llm.eval(prompt + generated)
        tx.commit(prompt_text, len(prompt), 0, ["t", "h", "e"])

    next_text = prompt_text + "the<end_of_turn>\n"
    ids, mark = cache.tokens_for(next_text)

    assert ids[: len(prompt) + 3] == prompt + generated  # Generated ids, not re-tokenized.
    assert cache.marks[mark] == (len(prompt) + 3, len(cache.key(prompt_text)) + 3)
    assert cache.prepare(ids) == len(prompt) + 3


def test_prepare_never_reuses_the_whole_prompt(cache: KVCache, llm) -> None:
    text = "exactly cached"
    ids = tokens(llm, text)
    with cache.begin() as tx:
        llm.eval(ids)
        tx.commit(text, len(ids))

    assert cache.prepare(ids) == len(ids) - 1  # One token is evaluated: fresh logits.
    assert llm.n_tokens == len(ids) - 1


def test_save_and_load_round_trip_and_refusals(cache: KVCache, llm, tmp_path: Path) -> None:
    text = "a conversation worth keeping"
    ids = tokens(llm, text)
    with cache.begin() as tx:
        llm.eval(ids)
        tx.commit(text, len(ids))
    path = tmp_path / "c.kv"
    assert cache.save(path, "model-a")
    assert not list(tmp_path.glob("*.tmp"))  # Written atomically.

    cache.truncate(0)
    assert cache.load(path, "model-a")
    assert cache.committed == ids and llm.n_tokens == top(llm) == len(ids)
    assert cache.committed_key == text

    assert not cache.load(path, "model-b")  # Another model's state.
    path.write_bytes(path.read_bytes()[:-10])
    assert not cache.load(path, "model-a")  # Truncated.
    assert not cache.load(tmp_path / "missing.kv", "model-a")


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_save_that_fails_leaves_the_old_state_and_no_temp_file(
    cache: KVCache, llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    text = "a conversation"
    with cache.begin() as tx:
        llm.eval(tokens(llm, text))
        tx.commit(text, llm.n_tokens)
    path = tmp_path / "c.kv"
    assert cache.save(path, "model-a")
    old = path.read_bytes()
    with cache.begin() as tx:
        llm.eval(tokens(llm, " that went on"))
        tx.commit(text + " that went on", llm.n_tokens)

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(OSError, match="No space left"):
        cache.save(path, "model-a")
    monkeypatch.undo()

    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["c.kv"]
    cache.truncate(0)
    assert cache.load(path, "model-a") and cache.committed_key == text


def test_a_special_token_the_model_wrote_never_stands_for_later_text(cache: KVCache, llm) -> None:
    """The model wrote `a`, a `<start_of_turn>` (which shows no text) and `b`: the
    next prompt, with the reply's text "ab", must not reuse that token for it."""
    prompt_text = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    prompt = tokens(llm, prompt_text)
    generated = [ord("a"), START_OF_TURN_ID, ord("b")]
    with cache.begin() as tx:
        llm.eval(prompt + generated)
        tx.commit(prompt_text, len(prompt), 0, ["a", "", "b"])

    ids, _ = cache.tokens_for(prompt_text + "ab<end_of_turn>\n")

    assert ids[: len(prompt) + 1] == [*prompt, ord("a")]  # Reused up to the special token ...
    assert ids.count(START_OF_TURN_ID) == prompt.count(START_OF_TURN_ID)  # ... and not past it.


def test_saved_state_keeps_special_tokens_apart_from_their_text(
    cache: KVCache, llm, tmp_path: Path
) -> None:
    text = "<start_of_turn>user\nsays <end_of_turn> \U0001f600<end_of_turn>\n"
    prompt = Prompt([(text[:20], True), (text[20:-14], False), (text[-14:], True)])
    ids, _ = cache.tokens_for(prompt)
    with cache.begin() as tx:
        llm.eval(ids)
        tx.commit(prompt, len(ids))
    key = cache.committed_key
    assert cache.save(tmp_path / "c.kv", "model-a")
    cache.truncate(0)

    assert cache.load(tmp_path / "c.kv", "model-a")
    assert cache.committed_key == key and cache.committed == ids
    assert ids.count(END_OF_TURN_ID) == 1


# A stopped reply kept for a Continue

PROMPT = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


def keep_a_stopped_reply(cache: KVCache, llm, reply: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Commit a first exchange, then evaluate PROMPT and `reply` (byte tokens) and keep them."""
    with cache.begin() as tx:
        llm.eval(tokens(llm, "committed part"))
        tx.commit("committed part", llm.n_tokens)
    text = "committed part" + PROMPT
    ids, mark = cache.tokens_for(text)
    generated = [ord(c) for c in reply]
    with cache.begin() as tx:
        llm.eval(ids[cache.prepare(ids) :] + generated)
        tx.keep(text, len(ids), mark, list(reply), next_token=ord("!"))
    return ids + generated


def test_a_kept_reply_stays_cached_but_uncommitted(cache: KVCache, llm) -> None:
    cached = keep_a_stopped_reply(cache, llm, "abc")

    assert cache.committed == tokens(llm, "committed part")
    assert llm.n_tokens == top(llm) == len(cached)
    assert cache.savepoint is not None and cache.savepoint.tokens == cached
    assert cache.savepoint.next_token == ord("!")


def test_a_continue_adopts_the_kept_reply_and_commits_it_when_done(cache: KVCache, llm) -> None:
    cached = keep_a_stopped_reply(cache, llm, "abc")
    text = "committed part" + PROMPT + "abc"

    with cache.begin(continuing=True) as tx:
        ids, mark = cache.tokens_for(text)
        assert ids == cached  # The reply's own ids, from the kept reply's marks.
        assert cache.prepare([*ids, ord("!")]) == len(ids)  # Nothing evaluated again.
        llm.eval([ord("!")])
        tx.commit(text, len(ids), mark, ["!"])

    assert cache.committed == [*cached, ord("!")] and cache.savepoint is None
    assert cache.committed_key.endswith("abc!")


def test_any_other_transaction_rolls_a_kept_reply_back(cache: KVCache, llm) -> None:
    keep_a_stopped_reply(cache, llm, "abc")
    committed = list(cache.committed)

    with cache.begin():
        assert llm.n_tokens == top(llm) == len(committed)
        assert cache.adopted() is None
    assert cache.savepoint is None and cache.committed == committed


def test_a_failed_continue_rolls_back_to_the_last_commit(cache: KVCache, llm) -> None:
    keep_a_stopped_reply(cache, llm, "abc")
    committed = list(cache.committed)

    with pytest.raises(ValueError), cache.begin(continuing=True):
        llm.eval([ord("!")])
        raise ValueError("the continue failed")

    assert llm.n_tokens == top(llm) == len(committed) and cache.committed == committed
    assert cache.savepoint is None


def test_a_continue_stopped_before_reading_puts_the_kept_reply_back(cache: KVCache, llm) -> None:
    cached = keep_a_stopped_reply(cache, llm, "abc")
    kept = cache.savepoint

    with cache.begin(continuing=True) as tx:
        llm.eval(tokens(llm, " and more"))  # Read in part when the stop came.
        tx.put_back()

    assert tx.state == "kept" and cache.savepoint is kept
    assert llm.n_tokens == top(llm) == len(cached)
    assert cache.committed == tokens(llm, "committed part")


def test_a_stopped_continue_rolls_back_once_the_kept_reply_is_cut(cache: KVCache, llm) -> None:
    keep_a_stopped_reply(cache, llm, "abc")
    committed = list(cache.committed)

    with cache.begin(continuing=True) as tx:
        cache.prepare(committed + tokens(llm, "another prompt"))  # Diverges inside it.
        tx.put_back()

    assert tx.state == "rolled back" and cache.savepoint is None
    assert llm.n_tokens == top(llm) == len(committed) and cache.committed == committed


def test_a_kept_reply_is_never_saved(cache: KVCache, llm, tmp_path: Path) -> None:
    keep_a_stopped_reply(cache, llm, "abc")
    committed = list(cache.committed)

    assert cache.save(tmp_path / "c.kv", "model-a")
    assert llm.n_tokens == top(llm) == len(committed)  # Rolled back before the write.
    assert cache.savepoint is None
    cache.truncate(0)
    assert cache.load(tmp_path / "c.kv", "model-a")
    assert cache.committed == committed and llm.n_tokens == top(llm) == len(committed)


def test_a_state_longer_than_the_context_asked_for_is_refused(
    cache: KVCache, llm, tmp_path: Path
) -> None:
    """llama.cpp rounds a context of 300 up to 512, as this one's: the state's tokens
    fit the rounded context, but not the 300 the `Llama` object keeps the ids of."""
    text = "a long committed conversation " * 16
    with cache.begin() as tx:
        llm.eval(tokens(llm, text))
        tx.commit(text, llm.n_tokens)
    assert 300 < len(cache.committed) < 512
    assert cache.save(tmp_path / "c.kv", "model-a")
    smaller = llama_cpp.Llama(model_path=llm.model_path, n_ctx=300, n_batch=64, verbose=False)
    try:
        assert smaller.n_ctx() == llm.n_ctx() == 512
        other = KVCache(smaller)
        loaded = other.load(tmp_path / "c.kv", "model-a")
        state = (smaller.n_tokens, other.committed)
    finally:
        smaller.close()

    assert not loaded and state == (0, [])
