"""Knowing when a screen's frame went to the terminal, and input read before it.

A dialog the app opens by itself (the approval dialog) must not take keys or
clicks the user aimed at what was on screen before it: an event's `time` says
when it was read, and the screen knows when it was first drawn. Textual has
no public hook after a frame is written, and `call_after_refresh` runs its
callback even when no frame could be written (while the app holds an update
batch open), so this hooks the screen's own compositor refresh, which writes
every frame of the top screen. A mouse event's `time` is lost on its way to
a widget (Textual re-makes the event), so the press is judged where the
screen receives it (`_forward_event`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from textual import events
from textual._time import get_time
from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")

event_clock = get_time  # The clock of events' `time` (perf_counter on Windows, else monotonic).


class DrawnModalScreen(ModalScreen[ResultType], Generic[ResultType]):
    """A modal screen that knows when it was first on the terminal (`shown_at`).

    `frame_drawn(at)` runs after each frame of it reaches the terminal. A
    mouse press read before the first frame (a click aimed at what was there
    before) is dropped whole: its down, its up and the click Textual makes of
    them (with a time of its own, so the press's down decides).

    If a Textual release renames the private `Screen._compositor_refresh` or
    `Screen._forward_event`, `frame_drawn()` is never called or early clicks
    pass (tests/test_tools_app.py fails: the approval dialog could never be
    answered by a key; an early click would answer it).
    """

    shown_at: float | None = None  # When the first frame with `ready()` true was written.

    def ready(self) -> bool:
        """Whether what the user answers (the buttons) is in the frame; override it."""
        return True

    def shown_before(self, moment: float) -> bool:
        """Whether the screen was on the terminal before `moment` (an event's `time`)."""
        return self.shown_at is not None and moment > self.shown_at

    def _compositor_refresh(self) -> None:  # Textual's: draws the screen's changes.
        app = self.app
        # Textual drops a frame while a batch is open (`App._display`): not drawn then.
        drawn = app.screen is self and not getattr(app, "_batch_count", 0)
        super()._compositor_refresh()
        if drawn and self.shown_at is None and self.ready():
            self.shown_at = event_clock()

    def _forward_event(self, event: events.Event) -> None:  # Textual's: input to widgets.
        if isinstance(event, events.MouseDown):
            self._early_press = not self.shown_before(event.time)
        if isinstance(event, events.MouseDown | events.MouseUp | events.Click) and getattr(
            self, "_early_press", False
        ):
            return  # Aimed at what was on screen before this screen: dropped.
        super()._forward_event(event)
