"""The scrolling list of a conversation's items, which folds what is out of sight.

It follows the newest item as it grows until the user scrolls up; `MoreBelow`
then says, while a reply comes in, that there is more below, until the view
is back at the bottom (End, or `follow()`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual import events
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.scrollbar import ScrollBar
from textual.widget import Widget
from textual.widgets import Static

from chatui._textual.after_layout import after_each_layout
from chatui._textual.light_scrollbar import light_vertical_scrollbar
from chatui.widgets.fold import Fold, FoldsInside


class MessageList(VerticalScroll):
    """A conversation's items, oldest first, anchored to the newest.

    What has gone out of sight above the view is folded (see `Fold`) after
    each layout, and by `fold_above_view()`. A long reply that starts above the
    view folds its own early blocks the same way, so a frame of a streaming
    reply costs about the same at its thousandth line as at its tenth.
    Scrolling up, a resize, or `unfold()` shows everything again, before the
    next frame: no blank is ever shown. So does a change of the width inside
    the list (its scrollbar appearing, say): the folds' heights were measured
    at the old width, where text wrapped differently.
    """

    BLANK = True  # It draws nothing itself (its items and scrollbar do): no lines to render.

    # Whether there is more below the view that the user has not seen: set once a reply
    # grows while the view is scrolled up (`receiving`), cleared at the bottom.
    more_below: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None) -> None:
        self._fold = Fold()
        super().__init__(self._fold.spacer, id=id)  # Composed first: always the first child.
        self._folded_inside: set[FoldsInside] = set()
        self._folded_at_width = 0
        self.receiving = False  # A reply is on its way (set by the screen).

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """The vertical scrollbar: a `LightScrollBar`."""
        return light_vertical_scrollbar(self)

    def on_mount(self) -> None:
        after_each_layout(self, self._after_layout)

    def _after_layout(self, screen: Screen[Any]) -> None:
        # Anchored growth scrolls without calling the scroll watchers. Fold only what
        # cannot come back into sight before the next layout, where a fold would show
        # as blank lines: the view's top moves up when the view grows taller (by at
        # most what else the screen holds) and when the newest content shrinks (by
        # at most the height of the newest reply's last block, when re-parsed).
        self._check_more_below()
        width = self.scrollable_content_region.width
        if width != self._folded_at_width:
            self._folded_at_width = width
            self.unfold()  # Laid out again at the new width, then folded.
            return
        items = self.items
        last = items[-1] if items else None
        shrink = last.tail_height() if isinstance(last, FoldsInside) else 0
        self.fold_above_view(margin=screen.size.height - self.outer_size.height + shrink)

    def follow(self) -> None:
        """Scroll to the newest item and keep following it as it grows (until scrolled up)."""
        self.anchor()  # Also when the user had scrolled away: it follows again.
        self.more_below = False

    def _check_more_below(self) -> None:
        # Anchored content shorter than the view sits at its bottom: a negative scroll_y.
        below = self.max_scroll_y - max(0.0, self.scroll_y) >= 1
        self.more_below = below and (self.more_below or self.receiving)

    @property
    def folded(self) -> list[Widget]:
        """The items hidden behind the spacer, oldest first."""
        return self._fold.folded

    @property
    def items(self) -> list[Widget]:
        """The conversation's widgets, folded or not."""
        return [child for child in self.children if child is not self._fold.spacer]

    async def replace_items(self, widgets: Iterable[Widget]) -> None:
        """Show `widgets` instead of the current items."""
        self.unfold()
        await self.remove_children(self.items)
        await self.mount_all(widgets)

    def fold_above_view(self, margin: int = 0) -> int:
        """Fold what ends `margin` lines or more above the view; return how many items folded.

        Measures the layout of the last screen refresh, so call it when that is
        current (not between mounting a widget and the next refresh).
        """
        items = self.items
        folded = self._fold.fold(items, round(self.scroll_y) - margin)
        shown = len(self._fold)
        first = items[shown] if shown < len(items) else None  # Maybe a long reply, above.
        if isinstance(first, FoldsInside) and first.fold_above(self.content_region.y - margin):
            self._folded_inside.add(first)
        return folded

    def unfold(self) -> None:
        """Show everything folded again."""
        self._fold.unfold()
        for item in self._folded_inside:
            item.unfold()
        self._folded_inside.clear()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_more_below()
        if new_value < old_value:
            self.unfold()  # Laid out again before the next frame.

    def on_resize(self, event: events.Resize) -> None:
        self.unfold()  # A new width re-wraps the items; a taller view can reach a fold.


class MoreBelow(Static):
    """The sign, above the composer, that the conversation goes on below the view."""

    DEFAULT_CSS = """
    MoreBelow {
        height: 1;
        width: 100%;
        padding: 0 2;
        text-align: right;
        color: $accent;
        text-style: bold;
        display: none;
    }
    """

    def __init__(self) -> None:
        super().__init__("↓ more below (End)", id="more-below")
