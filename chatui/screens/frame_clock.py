"""Drawing a screen ahead of Textual's frame clock."""

from __future__ import annotations

import asyncio

from textual.screen import Screen

SETTLE_S = 0.001
"""Time for widgets' refresh requests to reach their screen (a few loop turns)."""


def draw_now(screen: Screen) -> bool:
    """Lay out and draw `screen` now, as its frame clock would at its next tick.

    Textual draws at most 60 frames a second, on a fixed clock: a change made
    just after a frame waits up to 16.7 ms for the next. That is right while a
    reply streams (more text is on its way, and fewer frames leave the loop free
    for Esc), but the end of a reply should be on screen at once.

    Textual has no public call for this, so this runs the clock's own callback,
    the private `Screen._on_timer_update`, which draws only what changed, and
    nothing when the screen is not the current one. If a Textual release
    removes it, nothing is drawn early (the clock still draws the frame) and
    `tests/test_frame_clock.py` fails. Returns whether it could draw.
    """
    update = getattr(screen, "_on_timer_update", None)
    if update is None:
        return False
    update()
    return True


async def draw_when_settled(screen: Screen) -> None:
    """`draw_now(screen)` once the changes just made have reached the screen.

    A widget's refresh reaches its screen through a few messages, so drawing
    synchronously would leave the newest change to the clock. The caller waits
    for the draw: whatever it does next (storing, bookkeeping) comes after.
    """
    await asyncio.sleep(SETTLE_S)
    draw_now(screen)
