"""The scrolling list of a conversation's items, which can fold what is out of sight."""

from __future__ import annotations

from collections.abc import Iterable

from textual import events
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static


class MessageList(VerticalScroll):
    """A conversation's items, oldest first, anchored to the newest.

    Every screen refresh lays out every displayed widget, so the history above
    the view would cost time on each frame of a streaming reply without being
    seen. `fold_above_view()` hides the items that are entirely above the view
    behind one blank spacer of the same height, so the screen and the scroll
    position do not change. Scrolling up to the spacer, a resize, or
    `unfold()` shows the items again.
    """

    def __init__(self, *, id: str | None = None) -> None:
        self._spacer = Static(classes="fold-spacer")
        self._spacer.display = False
        super().__init__(self._spacer, id=id)  # Composed first, so always the first child.
        self._folded: list[Widget] = []
        self._spacer_height = 0

    @property
    def folded(self) -> list[Widget]:
        """The items hidden behind the spacer, oldest first."""
        return list(self._folded)

    @property
    def items(self) -> list[Widget]:
        """The conversation's widgets, folded or not."""
        return [child for child in self.children if child is not self._spacer]

    async def replace_items(self, widgets: Iterable[Widget]) -> None:
        """Show `widgets` instead of the current items."""
        self.unfold()
        await self.remove_children(self.items)
        await self.mount_all(widgets)

    def fold_above_view(self) -> int:
        """Fold the items entirely above the view; return how many were folded.

        Measures the layout of the last screen refresh, so call it when that is
        current (not between mounting a widget and the next refresh).
        """
        top = round(self.scroll_y)
        newly: list[Widget] = []
        for item in self.items[len(self._folded) :]:
            region = item.virtual_region_with_margin
            if not item.display or region.bottom > top:
                break
            newly.append(item)
        if not newly:
            return 0
        last = newly[-1]
        # The spacer ends where the last folded item's margin ends: the next item's
        # top margin then collapses against the same bottom margin as before.
        self._spacer_height = last.virtual_region.bottom
        self._spacer.styles.height = self._spacer_height
        self._spacer.styles.margin = (0, 0, last.styles.margin.bottom, 0)
        for item in newly:
            item.display = False
        self._spacer.display = True
        self._folded.extend(newly)
        return len(newly)

    def unfold(self) -> None:
        """Show every folded item again."""
        if not self._folded:
            return
        for item in self._folded:
            item.display = True
        self._folded.clear()
        self._spacer.display = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._folded and new_value < self._spacer_height:
            self.unfold()  # Laid out again before the next frame: no blank is ever shown.

    def on_resize(self, event: events.Resize) -> None:
        self.unfold()  # The items' heights change with the width.
