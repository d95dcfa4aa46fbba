"""Drawing a screen ahead of Textual's frame clock."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.screen import Screen
from textual.widget import Widget

SETTLE_TURNS = 100
"""The most turns of the event loop to wait for a widget's changes to reach its screen.

A change takes a few turns: through the widget's message queue, then the
screen's. Turns, not time: other work that runs in between (storing a reply,
say) holds up the changes just as long as it holds up the loop. A Markdown
update parses on a worker thread, though, and while other threads hold the
interpreter lock (an MCP library importing, a model loading) its turns run
empty: 20 ran out in CI about once in three runs. A turn with nothing to do
costs microseconds."""


def draw_now(screen: Screen[Any]) -> bool:
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


def draw_widgets_now(screen: Screen[Any], *widgets: Widget) -> bool:
    """Draw only the changes to `widgets` now: no layout, nothing else on `screen`.

    A full frame that lays out a streaming reply takes 5 to 9 ms; the status
    line alone takes about 1 (both at 100x40, traced in the app). A stop draws
    its status line with this first, then the rest of the stop (the reply's
    marker, its last text) in the next full frame. Each widget is drawn where
    the last layout put it, so this is for widgets whose place nothing else
    moves (the docked status bar); the next full frame draws whatever a
    pending layout changes.

    Textual has no public call for a partial frame. This does what
    `Screen._on_timer_update` does for its dirty widgets, on the compositor's
    private `update_widgets` and `render_update` and the App's private
    `_display`, minus the layout. Returns whether it drew; it does not when
    nothing of theirs changed, or where the screen is not the top one (a
    dialog tints what is under it), the app is inline, a resize has yet to be
    laid out, or Textual has changed these names (`tests/test_frame_clock.py`
    then fails).
    """
    app = screen.app
    compositor = getattr(screen, "_compositor", None)
    display = getattr(app, "_display", None)
    batch = getattr(app, "_batch_count", None)
    if (
        compositor is None
        or display is None
        or batch is None
        or app.screen is not screen  # Under a dialog it is drawn with the dialog's tint.
        or app.is_inline
        or getattr(compositor, "size", None) != screen.size
    ):
        return False
    try:
        visible = compositor.visible_widgets
        targets = {widget for widget in widgets if widget in visible}
        if not targets:
            return False
        compositor.update_widgets(targets)
        update = compositor.render_update(screen_stack=app._background_screens)
    except AttributeError:
        return False
    if update is None:
        return False  # Nothing of theirs had changed.
    # A batch (Textual's Markdown holds one open across awaits while it mounts a
    # block) holds back every frame. It hides half-made widgets, which share no
    # cell with these, so it does not hold back this one.
    app._batch_count = 0
    try:
        display(screen, update)
    finally:
        app._batch_count = batch
    return True


def refresh_pending(screen: Screen[Any], widget: Widget) -> bool:
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


async def draw_when_settled(screen: Screen[Any], widget: Widget) -> None:
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
