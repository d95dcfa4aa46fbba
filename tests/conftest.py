"""Shared fixtures: a fresh store, a fixed clock, the test models, and snapshots in snapshots/.

The helpers the tests share live in `tests/support/`; a test module imports
from there, never from another test module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_textual_snapshot

from chatui.config import Config
from chatui.providers.local import provider as local_module
from chatui.store import Store
from tests.support.clocks import FakeClock
from tests.support.headless import environment, remote_config
from tests.support.remote import WIRES, OpenAIWire, Wire
from tests.support.tiny_gguf import write_tiny_model
from tests.support.wire import WireServer

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "snapshots"

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")


def _snapshot_dirname(cls: type, *, test_location: object) -> str:
    return str(SNAPSHOTS / Path(test_location.filepath).stem)  # type: ignore[attr-defined]


# Snapshots live in snapshots/<test module>/ rather than beside the tests.
pytest_textual_snapshot.SVGImageExtension.dirname = classmethod(_snapshot_dirname)  # type: ignore[assignment]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store(tmp_path / "chat.sqlite3")
    yield db
    db.close()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC: dates on screen read the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(db_path=str(tmp_path / "chat.sqlite3"))


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight GGUF whose replies run to max_tokens (no end-of-generation token)."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf", suppress_eog=True)


@pytest.fixture(scope="session")
def default_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled default model, assembled once into a temporary cache dir."""
    target = tmp_path_factory.mktemp("cache") / "models" / "gemma.gguf"
    messages: list[str] = []
    local_module.assemble_default_model(target, messages.append)
    assert messages[-1] == "preparing model 100%"
    return target


@pytest.fixture(params=WIRES, ids=[wire.name for wire in WIRES])
def wire(request: pytest.FixtureRequest) -> Wire:
    """Each remote API in turn (`tests.support.remote.Wire`), for a test both share."""
    return request.param


@pytest.fixture
def server(wire: Wire) -> Iterator[WireServer]:
    """A wire server checking requests as `wire`'s API does (a module may define its own)."""
    with wire.serve() as running:
        yield running


@pytest.fixture
def openai() -> Wire:
    return OpenAIWire()


@pytest.fixture
def openai_server(openai: Wire) -> Iterator[WireServer]:
    """A server of OpenAI's API, for what does not depend on the API (see `openai_env`)."""
    with openai.serve() as running:
        yield running


@pytest.fixture
def openai_env(tmp_path: Path, openai: Wire, openai_server: WireServer) -> dict[str, str]:
    """chatui's environment on `openai_server`: for what a headless run does on any API."""
    return environment(tmp_path, remote_config(openai, openai_server))
