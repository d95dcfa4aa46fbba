"""The local provider on real llama.cpp with a tiny random-weight GGUF.

Greedy sampling makes every reply deterministic, so a warm (cache-reusing)
turn can be compared token for token with a cold context.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import llama_cpp
import pytest
from tiny_gguf import write_tiny_model

from chatui.config import LocalConfig
from chatui.messages import ResponseState
from chatui.providers.base import ProviderError, TextDelta
from chatui.providers.chat_format import GEMMA_TEMPLATE
from chatui.providers.llama_runtime import AbortFlag
from chatui.providers.local import LocalProvider, check_gguf
from chatui.store import Store
from chatui.turn import Turn, TurnEvent, TurnSettings


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replies run to max_tokens (no end-of-generation token)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf", suppress_eog=True)


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wider and deeper: a long prompt takes about a second to process."""
    path = tmp_path_factory.mktemp("models") / "slow.gguf"
    return write_tiny_model(path, dim=512, n_layers=8, suppress_eog=True)


def local_config(model: Path, **overrides: object) -> LocalConfig:
    values = dict(
        model_path=str(model),
        n_ctx=4096,
        temperature=0.0,
        repeat_penalty=1.0,
        max_tokens=24,
        n_threads=2,
        chat_template=GEMMA_TEMPLATE,  # The default model's format (the tiny GGUF's trims).
    )
    values.update(overrides)
    return LocalConfig(**values)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.after_stop = 0
        self.turn: Turn | None = None
        self.stop_after: int | None = None

    async def __call__(self, event: TurnEvent) -> None:
        assert self.turn is not None
        if self.turn.token.cancelled:
            self.after_stop += 1
        if isinstance(event.payload, TextDelta):
            self.texts.append(event.payload.text)
            if self.stop_after is not None and len(self.texts) >= self.stop_after:
                self.turn.cancel()


async def run_turn(provider, store, conversation, prompt, *, stop_after=None, start=True):
    recorder = Recorder()
    recorder.stop_after = stop_after
    turn = Turn(
        conversation=conversation,
        prompt=prompt,
        provider=provider,
        store=store,
        sink=recorder,
        settings=TurnSettings(system_prompt="Be brief."),
    )
    recorder.turn = turn
    if not start:
        return turn, recorder
    outcome = await turn.run()
    return outcome, recorder


def cache_state(provider: LocalProvider) -> tuple[int, int, int]:
    """(n_tokens, committed tokens, last position in the KV cache + 1)."""
    engine = provider.engine
    assert engine is not None and engine.llm is not None and engine.kv is not None

    def read() -> tuple[int, int, int]:
        memory = llama_cpp.llama_get_memory(engine.llm.ctx)
        top = llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1
        return engine.llm.n_tokens, len(engine.kv.committed), top

    return engine.call(read).result()


@pytest.fixture
async def provider(tiny_model: Path, tmp_path: Path):
    local = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "kv")
    await local.prepare()
    yield local
    await local.close()


async def test_complete_turn_commits_the_reply_to_the_cache(provider, store: Store) -> None:
    conversation = store.create_conversation()
    outcome, recorder = await run_turn(provider, store, conversation, "hello")

    assert outcome.state is ResponseState.COMPLETE
    response = outcome.responses[0]
    assert response.finish_reason == "length"
    assert response.text == "".join(recorder.texts) and response.text
    assert response.usage.output_tokens == 24 and not response.usage.estimated
    n_tokens, committed, top = cache_state(provider)
    job = provider.last_job
    assert committed == n_tokens == top == job.prompt_tokens + 23  # The last token is unevaluated.


async def test_abort_during_generation_stops_at_once_and_rolls_back(provider, store: Store) -> None:
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "first")
    before = cache_state(provider)
    provider.config.max_tokens = 2000

    outcome, recorder = await run_turn(provider, store, conversation, "second", stop_after=5)

    assert outcome.state is ResponseState.INTERRUPTED
    assert len(recorder.texts) == 5 and recorder.after_stop == 0
    assert provider.last_job.stopped in ("between tokens", "in decode")
    assert len(provider.last_job.reply_tokens) < 2000
    assert cache_state(provider) == before
    stored = store.load_conversation(conversation.id).items[-1]
    assert stored.state is ResponseState.INTERRUPTED and stored.text == "".join(recorder.texts)


async def test_abort_during_prefill_returns_from_decode_and_keeps_the_cache(
    slow_model: Path, tmp_path: Path, store: Store
) -> None:
    provider = LocalProvider(local_config(slow_model, max_tokens=4), state_dir=tmp_path)
    await provider.prepare()
    try:
        conversation = store.create_conversation()
        await run_turn(provider, store, conversation, "short")
        before = cache_state(provider)
        llm = provider.engine.llm
        prefill_started = threading.Event()
        original_eval = llm.eval

        def eval_and_signal(tokens):
            if len(tokens) > 100:
                prefill_started.set()
            return original_eval(tokens)

        llm.eval = eval_and_signal
        turn, recorder = await run_turn(provider, store, conversation, "long " * 600, start=False)
        task = asyncio.create_task(turn.run())
        assert await asyncio.to_thread(prefill_started.wait, 60)
        turn.cancel()
        outcome = await task

        assert outcome.state is ResponseState.INTERRUPTED
        assert provider.last_job.stopped == "in decode"
        assert recorder.texts == []
        assert outcome.responses[0].parts == []
        assert cache_state(provider) == before  # Only the committed conversation is cached.
    finally:
        await provider.close()


async def test_cancel_before_the_engine_starts_the_job(provider, store: Store) -> None:
    conversation = store.create_conversation()
    turn, recorder = await run_turn(provider, store, conversation, "x", start=False)
    blocker = threading.Event()
    provider.engine.call(lambda: blocker.wait(30))  # The model thread is busy.
    task = asyncio.create_task(turn.run())
    while provider.last_job is None or provider.last_job.prompt_text == "":
        await asyncio.sleep(0.001)
    turn.cancel()
    blocker.set()
    outcome = await task

    assert outcome.state is ResponseState.INTERRUPTED
    assert provider.last_job.stopped == "before start"
    assert provider.last_job.evaluated == 0
    assert recorder.texts == []


async def test_turn_after_a_cancel_matches_a_cold_context_and_evaluates_only_new_tokens(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    warm = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "warm")
    await warm.prepare()
    conversation = store.create_conversation()
    await run_turn(warm, store, conversation, "the first question")
    committed = cache_state(warm)[1]
    warm.config.max_tokens = 2000
    await run_turn(warm, store, conversation, "a question I stop", stop_after=7)
    warm.config.max_tokens = 24
    outcome, _ = await run_turn(warm, store, conversation, "the next question")
    warm_job = warm.last_job
    await warm.close()

    # A cold context given the same prompt tokens, greedy, as many tokens.
    cold = llama_cpp.Llama(model_path=str(tiny_model), n_ctx=4096, n_threads=2, verbose=False)
    cold_tokens = list(
        itertools.islice(cold.generate(warm_job.prompt_ids, temp=0.0, repeat_penalty=1.0), 24)
    )
    cold.close()

    assert outcome.state is ResponseState.COMPLETE
    assert warm_job.reply_tokens == cold_tokens
    assert warm_job.reused == committed
    assert warm_job.prompt_evaluated == warm_job.prompt_tokens - committed


async def test_failed_request_rolls_back(provider, store: Store) -> None:
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "ok")
    before = cache_state(provider)
    outcome, _ = await run_turn(provider, store, conversation, "x" * 5000)  # Beyond n_ctx.

    assert outcome.state is ResponseState.FAILED
    assert "no longer fits" in outcome.error
    assert cache_state(provider) == before


async def test_saved_state_resumes_with_only_new_tokens(tiny_model: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    first = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "kv")
    await first.prepare()
    conversation = store.create_conversation()
    await run_turn(first, store, conversation, "remember this")
    committed = cache_state(first)[1]
    await first.close()  # Quitting saves the conversation's KV state.
    (saved,) = (tmp_path / "kv").glob("*.kv")
    assert saved.name == f"{conversation.id}.kv"

    second = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "kv")
    await second.prepare()
    reopened = store.load_conversation(conversation.id)
    outcome, _ = await run_turn(second, store, reopened, "and now?")
    await second.close()

    assert outcome.state is ResponseState.COMPLETE
    assert second.last_job.reused == committed
    assert second.last_job.prompt_evaluated == second.last_job.prompt_tokens - committed


@pytest.mark.parametrize("damage", ["truncate", "foreign", "garbage"])
async def test_damaged_or_foreign_state_is_ignored(
    tiny_model: Path, tmp_path: Path, damage: str
) -> None:
    store = Store(tmp_path / "db.sqlite3")
    first = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "kv")
    await first.prepare()
    conversation = store.create_conversation()
    await run_turn(first, store, conversation, "remember this")
    await first.close()
    (saved,) = (tmp_path / "kv").glob("*.kv")
    data = saved.read_bytes()
    if damage == "truncate":
        saved.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        saved.write_bytes(data[:200] + bytes(len(data) - 200))
    model = tiny_model
    if damage == "foreign":
        model = write_tiny_model(tmp_path / "other.gguf", seed=7, suppress_eog=True)

    second = LocalProvider(local_config(model), state_dir=tmp_path / "kv")
    await second.prepare()
    outcome, _ = await run_turn(second, store, store.load_conversation(conversation.id), "more")
    await second.close()

    assert outcome.state is ResponseState.COMPLETE
    assert second.last_job.reused == 0  # Re-processed, not trusted.
    assert second.last_job.prompt_evaluated == second.last_job.prompt_tokens


async def test_missing_or_non_gguf_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        check_gguf(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    provider = LocalProvider(LocalConfig(model_path=str(bad)), state_dir=tmp_path)
    with pytest.raises(ProviderError, match="is not a GGUF model file"):
        await provider.prepare()


def test_abort_flag_is_gil_free_and_thread_safe() -> None:
    flag = AbortFlag()
    assert flag.gil_free
    assert not flag.is_set()
    thread = threading.Thread(target=flag.set)
    thread.start()
    thread.join()
    assert flag.is_set()
    flag.clear()
    assert not flag.is_set()


async def test_template_that_rewrites_replies_still_reuses_the_prompts(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    """The tiny GGUF's own template trims replies: the text after a reply differs
    from what was generated, so reuse stops at the end of the previous prompt."""
    provider = LocalProvider(local_config(tiny_model, chat_template=""), state_dir=tmp_path)
    await provider.prepare()
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "first")
    first = provider.last_job
    await run_turn(provider, store, conversation, "second")
    second = provider.last_job
    await provider.close()

    assert second.prompt_tokens > first.prompt_tokens
    assert second.reused >= first.prompt_tokens
    assert second.prompt_evaluated == second.prompt_tokens - second.reused


async def test_leaving_a_conversation_saves_its_state(provider, store: Store) -> None:
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "hello")
    await provider.conversation_left()

    (saved,) = provider.state_dir.glob("*.kv")
    assert saved.name == f"{conversation.id}.kv"


LOG_CHECK = """
import sys
from pathlib import Path
from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.providers.llama_engine import GenerationJob, LlamaEngine
model = Path(sys.argv[1])
engine = LlamaEngine(LocalConfig(model_path=str(model), max_tokens=400), model, None)
engine.call(engine.load).result()
job = GenerationJob("c", "hello " * 50, CancelToken(), lambda e: job.cancel.cancel())
engine.call(lambda: engine.generate(job)).result()
assert job.stopped, job
engine.close().result()
print("ok")
"""


def test_llama_cpp_writes_nothing_to_the_terminal(tiny_model: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LOG_CHECK, str(tiny_model)],
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert result.stdout == b"ok\n"
    assert result.stderr == b""


async def test_broken_model_or_template_is_a_clear_error(tiny_model: Path, tmp_path: Path) -> None:
    provider = LocalProvider(local_config(tiny_model, chat_template="{% for %}"), state_dir=None)
    with pytest.raises(ProviderError, match="chat template does not compile"):
        await provider.prepare()
    assert provider.engine is None

    # llama-cpp-python itself compiles a GGUF's embedded template while loading.
    broken_template = write_tiny_model(tmp_path / "tpl.gguf", chat_template="{% for %}")
    provider = LocalProvider(local_config(broken_template), state_dir=None)
    with pytest.raises(ProviderError, match="could not be loaded"):
        await provider.prepare()

    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(write_tiny_model(tmp_path / "whole.gguf").read_bytes()[:4096])
    provider = LocalProvider(local_config(truncated), state_dir=tmp_path / "b")
    with pytest.raises(ProviderError, match="could not be loaded"):
        await provider.prepare()


def test_registry_builds_the_configured_provider(tmp_path: Path, monkeypatch) -> None:
    from chatui.config import Config
    from chatui.providers.registry import create_provider

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    local = create_provider(Config(model=str(tmp_path / "m.gguf")))
    assert isinstance(local, LocalProvider)
    assert local.model_path == tmp_path / "m.gguf"
    assert local.state_dir == tmp_path / "chatui" / "kv"
    with pytest.raises(ProviderError, match="openai provider is not available"):
        create_provider(Config(provider="openai"))
