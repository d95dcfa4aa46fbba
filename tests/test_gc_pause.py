"""The collector's full passes wait while a reply streams."""

from __future__ import annotations

import gc

from apphelpers import make_app, send, settled, wait_until
from scripted import STALL, ScriptedProvider, words

from chatui.gc_pause import NO_FULL_PASS, no_full_collections
from chatui.store import Store


def full_passes() -> int:
    return gc.get_stats()[2]["collections"]


def allocate_long_lived(count: int = 300_000) -> list[list[int]]:
    return [[n] for n in range(count)]  # Survives young collections into the oldest.


def test_no_full_pass_inside_the_block_and_the_thresholds_come_back() -> None:
    thresholds = gc.get_threshold()
    before = full_passes()
    kept = allocate_long_lived()
    assert full_passes() > before  # Without the block, this allocation triggers full passes.

    before = full_passes()
    with no_full_collections():
        kept += allocate_long_lived()
        assert full_passes() == before
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
        assert gc.get_threshold() == thresholds
