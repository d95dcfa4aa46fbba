"""The collector's full passes wait while a reply streams."""

from __future__ import annotations

import gc

import pytest

from chatui.gc_pause import HOLDS_FULL_PASSES, NO_FULL_PASS, FullCollectionHold
from chatui.session import Session
from chatui.store import Store
from chatui.turn import Turn, TurnOutcome
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import STALL, ScriptedProvider, words

pytestmark = pytest.mark.skipif(
    not HOLDS_FULL_PASSES, reason="this Python's collector is incremental: no full pass to hold"
)


def full_passes() -> int:
    return gc.get_stats()[2]["collections"]


def allocate_long_lived(count: int = 300_000) -> list[list[int]]:
    return [[n] for n in range(count)]  # Survives young collections into the oldest.


def test_no_full_pass_while_held_and_the_thresholds_come_back() -> None:
    thresholds = gc.get_threshold()
    before = full_passes()
    kept = allocate_long_lived()
    assert full_passes() > before  # Without a hold, this allocation triggers full passes.

    before = full_passes()
    outer, inner = FullCollectionHold(), FullCollectionHold()
    kept += allocate_long_lived()
    inner.release()
    inner.release()  # Twice: still one release.
    kept += allocate_long_lived()
    assert full_passes() == before
    assert gc.get_threshold()[2] == NO_FULL_PASS  # The outer hold still holds.
    outer.release()
    assert gc.get_threshold() == thresholds


async def test_full_passes_wait_while_a_turn_runs(store: Store) -> None:
    thresholds = gc.get_threshold()
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.started.wait()
        assert gc.get_threshold() == (*thresholds[:2], NO_FULL_PASS)

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await pilot.pause()  # The turn's last frame: then full passes may run.
        assert gc.get_threshold() == thresholds


async def test_full_passes_wait_until_the_turn_is_on_screen(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    thresholds = gc.get_threshold()
    app = make_app(store, ScriptedProvider(words("a short reply")))
    when_shown: list[int] = []  # The oldest generation's threshold as the outcome shows.
    finished = Session.turn_finished

    def recording_turn_finished(self: Session, turn: Turn, outcome: TurnOutcome) -> None:
        when_shown.append(gc.get_threshold()[2])
        finished(self, turn, outcome)

    monkeypatch.setattr(Session, "turn_finished", recording_turn_finished)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await wait_until(pilot, settled(app))
        await pilot.pause()
        assert when_shown == [NO_FULL_PASS]
        assert gc.get_threshold() == thresholds  # Released after the next refresh.
