"""Drawing a screen ahead of Textual's frame clock."""

from __future__ import annotations

import asyncio

from textual.screen import Screen
from textual.widget import Widget

SETTLE_TURNS = 20
"""The most turns of the event loop to wait for a widget's changes to reach its screen.

A change takes a few turns: through the widget's message queue, then the
screen's. Turns, not time: other work that runs in between (storing a reply,
say) holds up the changes just as long as it holds up the loop."""


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


def refresh_pending(screen: Screen, widget: Widget) -> bool:
    """Whether a change to `widget` or its descendants has yet to reach `screen`.

    A widget's refresh request travels through its own message queue and then
    the screen's before the screen knows what to draw. This reads Textual's
    private flags and queue; should they go, it answers True (still pending).
    """
    queue = getattr(screen, "_message_queue", None)
    if queue is None or not queue.empty():
        return True
    return any(
        getattr(node, "_repaint_required", True) or getattr(node, "_layout_required", True)
        for node in widget.walk_children(with_self=True)
    )


async def draw_when_settled(screen: Screen, widget: Widget) -> None:
    """`draw_now(screen)` once the changes just made to `widget` have reached the screen.

    Drawing synchronously would leave the newest change to the frame clock, so
    this lets the event loop turn until no refresh of `widget` is pending, for
    at most `SETTLE_TURNS` turns. A caller that awaits the draw does whatever
    it does next (storing, bookkeeping) after it.
    """
    for _ in range(SETTLE_TURNS):
        if not refresh_pending(screen, widget):
            break
        await asyncio.sleep(0)
    draw_now(screen)
