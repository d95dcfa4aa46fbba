"""The local provider in the app: loading progress, a stop during prefill, and the
real default model end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatui.config import LocalConfig
from chatui.messages import ModelResponse, ResponseState
from chatui.providers.local import provider as local_module
from chatui.providers.local.provider import LocalProvider
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.status_bar import StatusBar
from tests.support.app import fix_stop_time, make_app, send, settled, wait_until
from tests.support.clocks import FakeClock
from tests.support.local import cache_state, hold_the_prefill_midway, local_config
from tests.support.tiny_gguf import write_tiny_model

SIZE = (80, 24)


class GatedProvider(LocalProvider):
    """Reports some progress, then waits for the test before really loading."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def _prepare(self, progress) -> None:
        progress("preparing model 42%")
        self.waiting.set()
        await self.gate.wait()
        await super()._prepare(progress)


@pytest.fixture(scope="module")
def slow_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "slow.gguf"
    return write_tiny_model(path, dim=512, n_layers=8, suppress_eog=True)


def test_model_loading_progress_while_the_user_types(
    snap_compare, store: Store, slow_tiny: Path, tmp_path: Path
) -> None:
    provider = GatedProvider(local_config(slow_tiny), state_dir=tmp_path)
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await provider.waiting.wait()
        await pilot.press(*"Hello while it loads")
        await pilot.pause()
        status = app.screen.query_one(StatusBar)
        assert (status.state, status.detail) == ("loading", "preparing model 42%")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_local_reply_interrupted_during_prefill(
    snap_compare, store: Store, slow_tiny: Path, tmp_path: Path
) -> None:
    provider = LocalProvider(local_config(slow_tiny, max_tokens=8), state_dir=tmp_path)
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:
        await provider.prepare()
        await wait_until(pilot, lambda: app.screen.query_one(StatusBar).state == "idle")
        held = hold_the_prefill_midway(provider)  # Until the Esc, on any machine.
        # In a task: Pilot's press returns only once the app is idle.
        sending = asyncio.create_task(send(pilot, "Summarize this: " + "lorem ipsum " * 150))
        assert await asyncio.to_thread(held.wait, 60)
        await pilot.press("escape")
        await sending
        await wait_until(pilot, settled(app))
        await fix_stop_time(pilot)
        assert provider.last_job.stopped == "in decode"
        assert cache_state(provider)[0] == 0  # Nothing of the stopped prompt stays cached.

    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    finally:
        asyncio.run(provider.close())  # Its llama.cpp thread and model, not left to later tests.


async def test_real_default_model_exchange_stop_and_cache_reuse(
    store: Store, default_model_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(local_module, "default_model_path", lambda: default_model_cache)
    config = LocalConfig(n_threads=2, temperature=0.0, max_tokens=48)
    provider = LocalProvider(config, state_dir=tmp_path / "kv")
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await provider.prepare()
        await send(pilot, "What is the capital of France?")
        await wait_until(pilot, settled(app), timeout=120)
        first = provider.last_job
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert app.last_outcome.responses[0].text.strip()  # A base model: no content checks.
        committed = cache_state(provider)[1]

        provider.config.max_tokens = 1000
        await send(pilot, "Tell me a very long story about Paris.")
        view = lambda: app.screen.query(AssistantMessage).last()  # noqa: E731
        await wait_until(
            pilot,
            lambda: view().response.state is not ResponseState.COMPLETE and view().written >= 5,
            timeout=120,
        )
        await pilot.press("escape")
        await wait_until(pilot, settled(app), timeout=60)
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert cache_state(provider)[1] == committed  # Rolled back to the first exchange.

        provider.config.max_tokens = 16
        await send(pilot, "And of Italy?")
        await wait_until(pilot, settled(app), timeout=120)
        follow_up = provider.last_job
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert follow_up.reused == committed  # The first exchange was not re-processed.
        assert follow_up.prompt_evaluated == follow_up.prompt_tokens - committed
        assert follow_up.prompt_evaluated < follow_up.prompt_tokens - first.prompt_tokens
        conversation_id = app.chat.conversation.id
        await pilot.press("ctrl+q")

    assert list((tmp_path / "kv").glob("*.kv"))  # Quitting saved the KV state.
    items = store.load_conversation(conversation_id).items
    states = [i.state for i in items if isinstance(i, ModelResponse)]
    assert states == [ResponseState.COMPLETE, ResponseState.INTERRUPTED, ResponseState.COMPLETE]


async def test_missing_model_file_is_reported_in_the_conversation(
    store: Store, tmp_path: Path
) -> None:
    from chatui.widgets.chat_message import ErrorNotice

    provider = LocalProvider(LocalConfig(model_path=str(tmp_path / "gone.gguf")), state_dir=None)
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: bool(app.screen.query(ErrorNotice)))
        assert "gone.gguf does not exist" in str(app.screen.query_one(ErrorNotice).render())
        await send(pilot, "still there?")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.FAILED
        assert "does not exist" in app.last_outcome.error


async def test_a_cache_that_cannot_be_saved_is_a_notice_and_ctrl_n_still_works(
    store: Store, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    model = write_tiny_model(tmp_path / "tiny.gguf", suppress_eog=True)
    provider = LocalProvider(local_config(model), state_dir=blocker / "kv")
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "first")
        await wait_until(pilot, settled(app))
        first = app.chat.conversation.id

        await pilot.press("ctrl+n")  # Leaving saves the cache: the save fails.
        await wait_until(pilot, lambda: app.chat.conversation.id != first)
        await wait_until(pilot, lambda: bool(app._notifications))
        (notice,) = list(app._notifications)
        assert "Could not save the model's cache" in notice.message
        assert str(blocker) in notice.message

        await send(pilot, "second")  # Another conversation's turn still works.
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.COMPLETE
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: len(app.chat.conversation.items) == 0)
        await pilot.pause()
        assert len(list(app._notifications)) == 1  # Reported once, not on every save.
        assert app.is_running
    await provider.close()  # Its llama.cpp thread and model, not left to later tests.
