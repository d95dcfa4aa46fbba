"""The local provider on real llama.cpp with a tiny random-weight GGUF.

Greedy sampling makes every reply deterministic, so a warm (cache-reusing)
turn can be compared token for token with a cold context.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import sys
import threading
from pathlib import Path

import llama_cpp
import pytest

from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.history import ChatMessage
from chatui.messages import ResponseState
from chatui.providers.base import ModelRequest, PromptProgress, ProviderError, TextDelta
from chatui.providers.local import llama_engine
from chatui.providers.local.llama_engine import model_identity
from chatui.providers.local.llama_runtime import AbortFlag, amx_present
from chatui.providers.local.provider import LocalProvider, check_gguf
from chatui.store import Store
from chatui.turn import QuietObserver, Turn, TurnEvent, TurnSettings
from tests.support.clocks import LoopClock
from tests.support.local import (
    cache_state,
    hold_the_prefill_midway,
    hold_the_reply_at,
    local_config,
)
from tests.support.tiny_gguf import write_tiny_model
from tests.support.turns import BRIEF, make_turn, run_turn


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


async def test_abort_during_generation_stops_at_once_and_commits_nothing(
    provider, store: Store
) -> None:
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "first")
    before = cache_state(provider)
    provider.config.max_tokens = 2000
    hold_the_reply_at(provider, 10)  # Whatever the machine, the stop comes before the 10th.

    outcome, recorder = await run_turn(provider, store, conversation, "second", stop_after=5)

    assert outcome.state is ResponseState.INTERRUPTED
    assert len(recorder.texts) == 5 and recorder.after_stop == 0
    assert provider.last_job.stopped in ("between tokens", "in decode")
    assert 5 <= len(provider.last_job.reply_tokens) <= 10
    job = provider.last_job
    evaluated = len(job.reply_tokens) - (job.stopped == "in decode")
    n_tokens, committed, top = cache_state(provider)
    assert committed == before[1]  # Rolled back, as far as the conversation goes ...
    assert n_tokens == top == job.prompt_tokens + evaluated  # ... and kept for a Continue.
    stored = store.load_conversation(conversation.id).items[-1]
    assert stored.state is ResponseState.INTERRUPTED and stored.text == "".join(recorder.texts)


async def test_abort_during_prefill_returns_from_decode_and_keeps_the_cache(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    config = local_config(tiny_model, n_batch=32, n_ubatch=32, max_tokens=4)
    provider = LocalProvider(config, state_dir=tmp_path)
    await provider.prepare()
    try:
        conversation = store.create_conversation()
        await run_turn(provider, store, conversation, "short")
        before = cache_state(provider)
        held = hold_the_prefill_midway(provider)
        turn, recorder = make_turn(
            store, provider, conversation=conversation, settings=BRIEF, prompt="long " * 600
        )
        task = asyncio.create_task(turn.run())
        assert await asyncio.to_thread(held.wait, 60)
        turn.cancel()
        outcome = await task

        assert outcome.state is ResponseState.INTERRUPTED
        assert provider.last_job.stopped == "in decode"
        assert 64 <= provider.last_job.evaluated < provider.last_job.prompt_tokens
        assert recorder.texts == []
        assert outcome.responses[0].parts == []
        assert cache_state(provider) == before  # Only the committed conversation is cached.
    finally:
        await provider.close()


async def test_cancel_before_the_engine_starts_the_job(provider, store: Store) -> None:
    conversation = store.create_conversation()
    turn, recorder = make_turn(
        store, provider, conversation=conversation, settings=BRIEF, prompt="x"
    )
    blocker = threading.Event()
    count_tokens = provider.count_tokens

    async def counted_then_busy(*args):  # type: ignore[no-untyped-def]
        tokens = await count_tokens(*args)
        provider.engine.call(lambda: blocker.wait(30))  # The model thread is busy.
        return tokens

    provider.count_tokens = counted_then_busy
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


async def test_a_stop_while_the_prompt_waits_to_be_measured_ends_the_turn_at_once(
    provider, store: Store
) -> None:
    """The prompt is measured on the model's thread: a stop need not wait for it to be free."""
    conversation = store.create_conversation()
    turn, recorder = make_turn(
        store, provider, conversation=conversation, settings=BRIEF, prompt="x"
    )
    blocker, measuring = threading.Event(), asyncio.Event()
    provider.engine.call(lambda: blocker.wait(30))  # The model thread is busy.
    count_tokens = provider.count_tokens

    async def measured(*args):  # type: ignore[no-untyped-def]
        measuring.set()
        return await count_tokens(*args)

    provider.count_tokens = measured
    task = asyncio.create_task(turn.run())
    await measuring.wait()
    turn.cancel()
    outcome = await task
    blocker.set()

    assert outcome.state is ResponseState.INTERRUPTED
    assert provider.last_job is None  # Nothing was sent to the model.
    assert [i.text for i in store.load_conversation(conversation.id).items] == ["x"]
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
    """The engine's own check (a turn would have refused this prompt before sending it)."""
    conversation = store.create_conversation()
    await run_turn(provider, store, conversation, "ok")
    before = cache_state(provider)
    too_long = [ChatMessage("user", "x" * 5000)]  # Beyond n_ctx.
    request = ModelRequest(too_long, CancelToken(), [], conversation.id)

    with pytest.raises(ProviderError, match="no longer fits"):
        async with provider.stream(request) as events:
            async for _event in events:
                pass
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


async def test_what_others_say_while_the_model_loads_reaches_the_terminal(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The load's own chatter goes nowhere; a headless run's "Stopped…" meanwhile is seen."""
    loading, release = threading.Event(), threading.Event()
    real_init = llama_engine.CountingLlama.__init__

    def held_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        print("model metadata…", file=sys.stderr)  # As Llama() does, verbose.
        print("model metadata…")
        loading.set()
        release.wait(30)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(llama_engine.CountingLlama, "__init__", held_init)
    provider = LocalProvider(local_config(tiny_model), state_dir=tmp_path / "kv")
    preparing = asyncio.ensure_future(provider.prepare())
    try:
        await asyncio.to_thread(loading.wait, 30)
        print("Stopped before the request was sent.", file=sys.stderr)  # This thread's.
        print("a reply")
    finally:
        release.set()
        await preparing
        await provider.close()
    out, err = capsys.readouterr()
    assert (out, err) == ("a reply\n", "Stopped before the request was sent.\n")


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
from chatui.providers.local.llama_engine import GenerationJob, LlamaEngine
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
    from chatui.providers.openai_chat import OpenAIProvider

    remote = create_provider(Config(provider="openai", model="gpt-x"))
    assert isinstance(remote, OpenAIProvider) and remote.model == "gpt-x"
    from chatui.providers.anthropic_messages import AnthropicProvider

    assert isinstance(create_provider(Config(provider="anthropic")), AnthropicProvider)


# A KV state that cannot be saved


class Notices:
    """Records `on_notice` calls and the thread each arrived on."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.threads.add(threading.get_ident())


async def test_an_uncreatable_state_dir_is_reported_once_and_fails_no_turn(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    state_dir = blocker / "kv"  # mkdir fails: its parent is a regular file.
    provider = LocalProvider(local_config(tiny_model, max_tokens=4), state_dir=state_dir)
    notices = Notices()
    provider.on_notice = notices
    await provider.prepare()
    try:
        first, second = store.create_conversation(), store.create_conversation()
        outcomes = []
        for conversation in (first, second, first, second):  # Each switch saves, and fails.
            outcome, _ = await run_turn(provider, store, conversation, "hello")
            outcomes.append(outcome.state)
        await provider.conversation_left()  # Ctrl+N: must not raise.
        await provider.conversation_left()
        outcome, _ = await run_turn(provider, store, store.create_conversation(), "new one")
        outcomes.append(outcome.state)
    finally:
        await provider.close()

    assert outcomes == [ResponseState.COMPLETE] * 5
    assert len(notices.messages) == 1  # One failure, reported once.
    assert str(state_dir) in notices.messages[0]
    assert "Not a directory" in notices.messages[0]
    assert notices.threads == {threading.get_ident()}  # On the event loop's thread.


@pytest.mark.parametrize("failing", ["fsync", "replace"])
async def test_a_full_disk_keeps_the_old_state_file_and_leaves_no_temp_file(
    tiny_model: Path, tmp_path: Path, store: Store, monkeypatch, failing: str
) -> None:
    state_dir = tmp_path / "kv"
    provider = LocalProvider(local_config(tiny_model, max_tokens=4), state_dir=state_dir)
    notices = Notices()
    provider.on_notice = notices
    await provider.prepare()
    try:
        first, second = store.create_conversation(), store.create_conversation()
        await run_turn(provider, store, first, "remember this")
        await provider.conversation_left()
        saved = state_dir / f"{first.id}.kv"
        old_state = saved.read_bytes()
        await run_turn(provider, store, first, "and this too")  # State to save on leaving.

        def no_space(*args: object) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, failing, no_space)
        outcome, _ = await run_turn(provider, store, second, "another conversation")
        await provider.conversation_left()
        still_saved = saved.read_bytes()
        leftovers = sorted(p.name for p in state_dir.iterdir())
        monkeypatch.undo()

        reopened = store.load_conversation(first.id)
        back, _ = await run_turn(provider, store, reopened, "back again")
        resumed = provider.last_job
    finally:
        await provider.close()

    assert outcome.state is ResponseState.COMPLETE
    assert still_saved == old_state  # The valid old state, not a half-written one.
    assert leftovers == [saved.name]  # No temp file, and nothing saved for `second`.
    assert len(notices.messages) == 1
    assert notices.messages[0] == (
        f"Could not save the model's cache for this conversation in {state_dir}: "
        "No space left on device. The next visit re-reads it."
    )
    assert back.state is ResponseState.COMPLETE
    assert 0 < resumed.reused < resumed.prompt_tokens  # The old state was still usable.


# Tool-call ids that never repeat


async def test_two_requests_never_repeat_a_tool_call_id(
    provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatui.providers.base import ModelRequest, ToolCallStart, ToolSpec
    from chatui.providers.local import llama_engine
    from chatui.providers.local.tool_markup import ID_PATTERN, ToolCallMarkupParser

    parsers: list[ToolCallMarkupParser] = []

    class Recording(ToolCallMarkupParser):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            parsers.append(self)

    monkeypatch.setattr(llama_engine, "ToolCallMarkupParser", Recording)
    tools = [ToolSpec("echo", "Echo the text", {"type": "object"})]
    for prompt in ("one", "two"):
        request = ModelRequest([ChatMessage("user", prompt)], CancelToken(), tools, "c")
        async with provider.stream(request) as events:
            async for _ in events:
                pass

    markup = '<tool_call>{"name": "echo", "arguments": {}}</tool_call>' * 2
    ids = [e.id for p in parsers for e in p.feed(markup) if isinstance(e, ToolCallStart)]
    assert len(parsers) == 2
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(ID_PATTERN.fullmatch(i) for i in ids)


# Saved state and a replaced model file


def mixed_model(a: bytes, b: bytes, keep: int) -> bytes:
    """Model B's weights behind model A's first `keep` bytes: the same size and header."""
    assert len(a) == len(b)
    return a[:keep] + b[keep:]


@pytest.mark.parametrize("replace", ["new file", "in place, old mtime"])
async def test_state_saved_with_a_replaced_model_file_is_not_resumed(
    tmp_path: Path, store: Store, replace: str
) -> None:
    """Model B differs from A only after the first MiB, the part the old identity hashed."""
    model = write_tiny_model(tmp_path / "model.gguf", dim=256, suppress_eog=True)
    a = model.read_bytes()
    other = write_tiny_model(tmp_path / "b.gguf", dim=256, seed=7, suppress_eog=True)
    b = mixed_model(a, other.read_bytes(), 1 << 20)
    assert len(a) > 2 << 20 and a[: 1 << 20] == b[: 1 << 20] and a != b
    first = LocalProvider(local_config(model, max_tokens=8), state_dir=tmp_path / "kv")
    await first.prepare()
    conversation = store.create_conversation()
    await run_turn(first, store, conversation, "remember this")
    await first.close()  # Saves the conversation's state for model A.
    before = os.stat(model)
    if replace == "new file":
        (tmp_path / "new.gguf").write_bytes(b)
        os.replace(tmp_path / "new.gguf", model)
    else:
        with model.open("r+b") as file:
            file.write(b)
        os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(model)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        )

    second = LocalProvider(local_config(model, max_tokens=8), state_dir=tmp_path / "kv")
    await second.prepare()
    outcome, _ = await run_turn(second, store, store.load_conversation(conversation.id), "more")
    job = second.last_job
    await second.close()
    cold = llama_cpp.Llama(model_path=str(model), n_ctx=4096, n_threads=2, verbose=False)
    cold_tokens = list(itertools.islice(cold.generate(job.prompt_ids, temp=0.0), 8))
    cold.close()

    assert outcome.state is ResponseState.COMPLETE
    assert job.reused == 0  # Model A's cached tokens are not reused by model B.
    assert job.reply_tokens == cold_tokens


def test_model_identity_follows_the_file_not_just_its_name_and_size(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "m.gguf")
    same = model_identity(path)
    assert model_identity(path) == same

    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # One bit near the end of the file.
    stamp = os.stat(path)
    with path.open("r+b") as file:
        file.write(data)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert model_identity(path) != same

    data[-1] ^= 1  # The original bytes again, but a new mtime.
    path.write_bytes(data)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    assert model_identity(path) != same


# Progress while the prompt is processed


async def test_prompt_processing_reports_progress_every_batch_before_the_first_text(
    tiny_model: Path, tmp_path: Path
) -> None:
    from chatui.providers.base import ModelRequest

    provider = LocalProvider(
        local_config(tiny_model, n_batch=32, n_ubatch=32, max_tokens=3), state_dir=tmp_path
    )
    await provider.prepare()
    try:
        runs = []
        for prompt in ("word " * 200, "word " * 200 + "and more " * 20):  # Cold, then warm.
            history = [ChatMessage("user", prompt)]
            request = ModelRequest(history, CancelToken(), conversation_id="c")
            async with provider.stream(request) as events:
                runs.append(([e async for e in events], provider.last_job))
    finally:
        await provider.close()

    for events, job in runs:
        first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
        progress = [(i, e) for i, e in enumerate(events) if isinstance(e, PromptProgress)]
        done = [e.done for _, e in progress]
        assert all(i < first_text for i, _ in progress)
        assert all(e.total == job.prompt_tokens for _, e in progress)
        assert done[0] == job.reused and done[-1] == job.prompt_tokens
        assert all(0 < b - a <= 32 for a, b in itertools.pairwise(done))
    assert runs[0][1].reused == 0 and runs[1][1].reused > 32  # The warm prompt reused the cache.


async def test_a_long_prefill_is_not_an_idle_stream(
    tiny_model: Path, tmp_path: Path, store: Store
) -> None:
    """Each batch of the prompt takes ten idle timeouts on the loop's clock: still not idle."""
    clock, idle = LoopClock(), 60.0
    config = local_config(tiny_model, n_batch=32, n_ubatch=32, max_tokens=2)
    provider = LocalProvider(config, state_dir=tmp_path)
    await provider.prepare()
    seen: list[str] = []  # "progress" while the prompt is read, "text", and each "10 idle".

    class Watch(QuietObserver):
        async def on_event(self, event: TurnEvent) -> None:
            payload = event.payload
            if isinstance(payload, PromptProgress) and payload.done < payload.total:
                seen.append("progress")
                await clock.advance(10 * idle)  # The next batch takes this long.
                seen.append("10 idle")
            elif isinstance(payload, TextDelta):
                seen.append("text")

    try:
        turn = Turn(
            conversation=store.create_conversation(),
            prompt="long " * 150,  # About 150 tokens: five batches or more.
            provider=provider,
            store=store,
            observer=Watch(),
            settings=TurnSettings(idle_timeout=idle),
        )
        outcome = await turn.run()
    finally:
        await provider.close()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    reading = seen[: seen.index("text")]
    assert reading == ["progress", "10 idle"] * (len(reading) // 2) and len(reading) >= 10
    assert "progress" not in seen[seen.index("text") :]


# Nearby disk errors


async def test_a_stale_state_file_that_cannot_be_deleted_fails_no_turn(
    tiny_model: Path, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = store.create_conversation()
    state_dir = tmp_path / "kv"
    state_dir.mkdir()
    (state_dir / f"{conversation.id}.kv").write_bytes(b"garbage")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    provider = LocalProvider(local_config(tiny_model, max_tokens=4), state_dir=state_dir)
    await provider.prepare()
    try:
        outcome, _ = await run_turn(provider, store, conversation, "hello")
    finally:
        await provider.close()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert provider.last_job.reused == 0


async def test_a_default_model_that_cannot_be_written_is_a_clear_error_and_is_retried(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatui.providers.local import provider as local

    attempts = []

    def assemble(target: Path, progress: object) -> Path:
        attempts.append(target)
        if len(attempts) == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return tiny_model  # The disk was freed.

    monkeypatch.setattr(local, "assemble_default_model", assemble)
    provider = LocalProvider(local_config(tiny_model, model_path=""), state_dir=None)
    with pytest.raises(ProviderError, match=r"could not be written to .*No space left on device"):
        await provider.prepare()
    await provider.prepare()
    await provider.close()

    assert len(attempts) == 2


async def test_the_model_loads_without_amx_buffers_where_llama_cpp_would_use_them(
    provider,
) -> None:
    """llama.cpp's AMX kernels crash on the default model's Q4_K weights (#20824)."""
    engine = provider.engine
    assert engine is not None and engine.llm is not None
    assert engine.llm.model_params.use_extra_bufts is (not amx_present())


async def test_generation_leaves_a_core_to_the_ui_by_default(
    tiny_model: Path, tmp_path: Path
) -> None:
    local = LocalProvider(local_config(tiny_model, n_threads=0), state_dir=tmp_path)
    await local.prepare()
    try:
        assert local.engine.llm.n_threads == max(1, (os.cpu_count() or 2) - 1)
    finally:
        await local.close()
