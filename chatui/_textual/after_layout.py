"""Running a widget's callback after each layout of its screen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.screen import Screen
from textual.widget import Widget


def after_each_layout(widget: Widget, callback: Callable[[Screen[Any]], None]) -> None:
    """Call `callback(screen)` after each layout of `widget`'s screen, while it is mounted.

    For what must follow every layout, not only a scroll or a resize: a view
    anchored to a growing reply scrolls without calling the scroll watchers.
    Textual has no public hook for this; it publishes the end of each layout
    (after the frame is drawn) on the screen's `screen_layout_refresh_signal`,
    which its docs do not list. The callback runs in `widget`'s queue, after
    the messages already in it; Textual drops the subscription once `widget`
    is removed. Call it from `on_mount` (the signal refuses a widget that is
    not running). If a Textual release renames the signal, this raises
    AttributeError at mount, and tests/test_message_list.py fails.
    """
    widget.screen.screen_layout_refresh_signal.subscribe(widget, callback)
