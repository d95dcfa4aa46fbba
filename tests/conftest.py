"""Shared fixtures: a fresh store, a fixed clock, and snapshots in top-level snapshots/."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import pytest_textual_snapshot

from chatui.config import Config
from chatui.store import Store

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
def config(tmp_path: Path) -> Config:
    return Config(db_path=str(tmp_path / "chat.sqlite3"))


class FakeClock:
    """A clock that advances a fixed step each time it is read: deterministic figures."""

    def __init__(self, step: float = 0.010) -> None:
        self._ticks = itertools.count()
        self.step = step

    def __call__(self) -> float:
        return next(self._ticks) * self.step


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
