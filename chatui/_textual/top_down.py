"""A vertical stack that Textual arranges once per layout, not two or three times."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.geometry import Size
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.layout import DockArrangeResult


class TopDownStack(Widget):
    """A vertical stack of auto- and fixed-height children, top-aligned: a reply's parts.

    Laying such a stack out does not depend on its own height, but Textual
    keys its arrangements by the full size: measuring the stack's height and
    then placing it at that height arranged its children twice in every
    layout, three times for a reply's blocks. This arranges at height 0, so
    each layout does it once. Give it as the second base: Textual takes a
    widget's CSS type names (`Markdown`, `Vertical`) from its first bases.
    """

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        return super().arrange(Size(size.width, 0), optimal)
