"""Knowing when a screen's frame went to the terminal.

A dialog the app opens by itself (the approval dialog) must not take keys the
user typed before it was on screen: those were meant for what was there
before. Textual has no public hook after a frame is written, and
`call_after_refresh` runs its callback even when no frame could be written
(while the app holds an update batch open), so this hooks the screen's own
compositor refresh, which writes every frame of the top screen.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class DrawnModalScreen(ModalScreen[ResultType], Generic[ResultType]):
    """A modal screen whose `frame_drawn()` runs after each frame of it reaches the terminal.

    If a Textual release renames the private `Screen._compositor_refresh`,
    `frame_drawn()` is never called (tests/test_tools_app.py fails: the
    approval dialog could never be answered by a key).
    """

    def _compositor_refresh(self) -> None:  # Textual's: draws the screen's changes.
        app = self.app
        # Textual drops a frame while a batch is open (`App._display`): not drawn then.
        drawn = app.screen is self and not getattr(app, "_batch_count", 0)
        super()._compositor_refresh()
        if drawn:
            self.frame_drawn()

    def frame_drawn(self) -> None:
        """A frame of this screen has just been written (the first one too)."""
