"""The first frame before the provider: its SDK (or llama.cpp) is imported after it, on a thread.

`chatui` makes its provider after the first frame (`Session(deferred=True)`):
importing `anthropic` alone takes a second. A prompt sent meanwhile waits
for the provider in its turn, where Esc reaches it.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from chatui import session as session_module
from chatui.app import ChatApp
from chatui.config import Config
from chatui.messages import ModelRef, ResponseState, UserPrompt
from chatui.providers.base import ProviderError
from chatui.screens.model_switcher import ModelSwitcher
from chatui.store import Store
from tests.support.app import screen_text, send, settled, wait_until
from tests.support.processes import OnPty
from tests.support.scripted import ScriptedProvider, words

ROOT = Path(__file__).resolve().parent.parent

# Run in the child: every import of an SDK (or llama.cpp) waits until the file GO exists,
# and says on which thread it came. A first frame that needed one would never be drawn.
HELD_IMPORTS = """
import os, sys, threading, time
HELD = ("anthropic", "openai", "llama_cpp")
class Hold:
    def find_spec(self, name, path=None, target=None):
        if name in HELD:
            with open(os.environ["IMPORTS"], "a") as record:
                record.write(f"{name} {threading.current_thread() is threading.main_thread()}\\n")
            while not os.path.exists(os.environ["GO"]):
                time.sleep(0.005)
        return None
sys.meta_path.insert(0, Hold())
from chatui.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("provider", ["anthropic", "openai", "local"])
def test_the_first_frame_is_drawn_before_the_providers_library_is_imported(
    tmp_path: Path, provider: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'provider = "{provider}"\n'
        '[openai]\napi_key = "sk-test"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[anthropic]\napi_key = "sk-ant-test"\nbase_url = "http://127.0.0.1:9"\n'
    )
    imports, go = tmp_path / "imports", tmp_path / "go"
    env = {
        **os.environ,
        "CHATUI_DB": str(tmp_path / "db.sqlite3"),
        "IMPORTS": str(imports),
        "GO": str(go),
        "TERM": "xterm-256color",
        "PYTHONPATH": str(ROOT),
    }
    terminal = OnPty([sys.executable, "-c", HELD_IMPORTS, "--config", str(config)], env)
    try:
        # The composer's placeholder: the first frame, drawn while the import is held.
        terminal.wait_for(lambda: "Enter sends" in terminal.output, timeout=30)
        terminal.wait_for(imports.exists, timeout=30)  # Asked for after the first frame...
        go.touch()
        terminal.write(b"\x11")  # Ctrl+Q
        assert terminal.exit_code(timeout=30) == 0
    finally:
        terminal.close()
    lines = imports.read_text().split()
    assert lines[1::2] and set(lines[1::2]) == {"False"}, lines  # ...and never on the main thread.


class Held:
    """A provider factory that holds on a thread until the test lets it go."""

    def __init__(self, provider: ScriptedProvider | None, error: str | None = None) -> None:
        self.provider, self.error = provider, error
        self.asked = threading.Event()
        self.go = threading.Event()
        self.threads: list[bool] = []

    def __call__(self, config: Config, name: str = "", model: str = "") -> ScriptedProvider:
        self.threads.append(threading.current_thread() is threading.main_thread())
        self.asked.set()
        assert self.go.wait(30)
        if self.provider is None:
            raise ProviderError(self.error or "no provider")
        return self.provider


def deferred_app(store: Store, monkeypatch: pytest.MonkeyPatch, held: Held) -> ChatApp:
    monkeypatch.setattr(session_module, "create_provider", held)
    config = Config(system_prompt="", db_path=str(store.path))
    return ChatApp(config, store, None, deferred=True)


async def test_a_prompt_sent_before_the_provider_is_made_is_answered_once_it_is(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider(words("Hello there."))
    held = Held(provider)
    app = deferred_app(store, monkeypatch, held)
    async with app.run_test() as pilot:
        await wait_until(pilot, held.asked.is_set)
        await send(pilot, "hi before")
        await wait_until(pilot, lambda: "hi before" in screen_text(app))
        assert provider.records == [] and app.chat.turn is not None and app.chat.turn.running

        held.go.set()
        await wait_until(pilot, settled(app))

        assert app.last_outcome is not None
        assert app.last_outcome.state is ResponseState.COMPLETE
        assert [m.content for m in provider.records[0].request.messages] == ["hi before"]
        assert "Hello there." in screen_text(app)
        assert app.chat._status.provider == "scripted"
    assert held.threads == [False]  # Made on a thread, once.


async def test_esc_while_the_provider_is_made_stops_the_turn_and_keeps_the_prompt(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider(words("late"), words("second"))
    held = Held(provider)
    app = deferred_app(store, monkeypatch, held)
    async with app.run_test() as pilot:
        await wait_until(pilot, held.asked.is_set)
        await send(pilot, "stop me")
        await wait_until(pilot, lambda: app.chat.turn is not None and app.chat.turn.running)
        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        assert app.last_outcome is not None
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert provider.records == []  # Nothing was sent.
        stored = store.load_conversation(app.chat.conversation.id).items
        assert [i.text for i in stored if isinstance(i, UserPrompt)] == ["stop me"]

        held.go.set()  # Made after the stop: the next prompt uses it.
        await wait_until(pilot, lambda: app.session.provider is provider)
        await send(pilot, "again")
        await wait_until(pilot, lambda: app.last_outcome is not None and app.last_outcome.responses)
        # The stopped prompt was never answered: it goes with the next one (history repair).
        assert [r.request.messages[-1].content for r in provider.records] == ["stop me\n\nagain"]


async def test_a_provider_that_cannot_be_made_is_said_and_the_prompt_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held(None, error="The frobnicator provider is missing.")
    app = deferred_app(store, monkeypatch, held)
    async with app.run_test() as pilot:
        await wait_until(pilot, held.asked.is_set)
        await send(pilot, "anyone?")
        held.go.set()
        await wait_until(pilot, settled(app))

        assert app.last_outcome is not None
        assert app.last_outcome.state is ResponseState.FAILED
        assert "The frobnicator provider is missing." in screen_text(app)
        assert app.session.startup_notice == "The frobnicator provider is missing."


async def test_the_model_switcher_makes_its_providers_on_a_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing the SDKs on the loop held every key and frame for up to two seconds."""
    held = Held(ScriptedProvider())
    held.go.set()
    app = deferred_app(store, monkeypatch, held)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.session.provider is not None)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelSwitcher))

    assert len(held.threads) == 3  # The configured provider, then the two others.
    assert not any(held.threads)  # None on the loop's (the main) thread.


class Makers:
    """A provider for each (provider, model) asked for, made at once, each recorded."""

    def __init__(self) -> None:
        self.made: dict[tuple[str, str], ScriptedProvider] = {}

    def __call__(self, config: Config, name: str = "", model: str = "") -> ScriptedProvider:
        key = (name or config.provider, model)
        self.made[key] = ScriptedProvider(words(f"from {key[0]}"), model=model or "default")
        return self.made[key]


@pytest.mark.parametrize("named", [False, True])
async def test_the_conversation_opened_at_start_answers_with_its_own_model_unless_one_is_named(
    store: Store, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef("openai", "gpt-own"))
    store.release_conversation(conversation.id)
    assert store.claim_conversation(conversation.id)
    makers = Makers()
    monkeypatch.setattr(session_module, "create_provider", makers)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = Config(system_prompt="", db_path=str(store.path))
    app = ChatApp(config, store, None, deferred=True, resume=conversation.id, model_named=named)
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.session.provider is not None)
        await send(pilot, "who answers?")
        await wait_until(pilot, settled(app))

    expected = ("local", "") if named else ("openai", "gpt-own")
    answered = [key for key, provider in makers.made.items() if provider.records]
    assert answered == [expected]
    kept = store.load_conversation(conversation.id).model
    assert kept == (
        ModelRef("local", config.local.model_path) if named else ModelRef("openai", "gpt-own")
    )
