"""The start, reviewed: a conversation opened at start whose own model cannot answer now.

`chatui --continue` (or `--resume`) opens a conversation before the provider
is made (after the first frame). If its own model cannot answer now (its
provider has no key any more, its GGUF file is gone), the configured model
answers and a notice says why, as when it is opened from the list; the
conversation keeps its own model for when it can again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatui import session as session_module
from chatui.app import ChatApp
from chatui.config import Config
from chatui.messages import ModelRef, ResponseState
from chatui.providers.base import Progress, Provider, ProviderError
from chatui.providers.registry import create_provider
from chatui.store import Store
from tests.support.app import screen_text, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, words


@pytest.mark.parametrize("gone", ["anthropic", "local"])
async def test_a_resumed_conversation_whose_model_cannot_answer_gets_the_configured_one(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gone: str
) -> None:
    model = "claude-gone" if gone == "anthropic" else str(tmp_path / "deleted.gguf")
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef(gone, model))
    store.release_conversation(conversation.id)
    assert store.claim_conversation(conversation.id)
    configured = ScriptedProvider(words("from the configured one"), model="configured-model")

    def make(config: Config, name: str = "", model: str = "") -> Provider:
        if (name or config.provider) == "openai":
            return configured
        return create_provider(config, name, model)  # The real one: no key, or no file.

    monkeypatch.setattr(session_module, "create_provider", make)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = Config(system_prompt="", db_path=str(store.path), provider="openai")
    config.openai.api_key = "sk-test-configured"
    app = ChatApp(config, store, None, deferred=True, resume=conversation.id)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.session.provider is not None)
        await send(pilot, "who answers?")
        await wait_until(pilot, settled(app))
        outcome = app.last_outcome
        notices = [notification.message for notification in app._notifications]

    assert outcome is not None and outcome.state is ResponseState.COMPLETE, outcome
    assert configured.records, "the configured model did not answer"
    assert any("cannot answer now" in notice for notice in notices), notices
    assert store.load_conversation(conversation.id).model == ModelRef(gone, model)  # Kept.


class SlowToLoad(ScriptedProvider):
    """A provider whose preparation (a local model's load) waits, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = asyncio.Event()
        self.fail = asyncio.Event()

    async def prepare(self, progress: Progress = lambda _: None) -> None:
        self.loading.set()
        await self.fail.wait()
        raise ProviderError("The model file is damaged: download it again.")


async def test_the_welcome_says_ready_only_once_the_model_has_loaded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = SlowToLoad()
    monkeypatch.setattr(session_module, "create_provider", lambda *_: provider)
    app = ChatApp(Config(system_prompt="", db_path=str(store.path)), store, None, deferred=True)
    async with app.run_test() as pilot:
        await wait_until(pilot, provider.loading.is_set)
        await pilot.pause()
        assert "✓ ready" not in screen_text(app)
        provider.fail.set()
        await wait_until(pilot, lambda: "✗ The model file is damaged" in screen_text(app))
        assert "✓ ready" not in screen_text(app)
