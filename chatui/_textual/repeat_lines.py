"""A bordered container that renders one line between its borders and repeats it."""

from __future__ import annotations

from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


class RepeatedMiddle(Widget):
    """A container whose lines between its top and bottom borders are all the same.

    Textual renders every line of a widget in sight, borders included, through
    `Widget.render_lines`, on every frame in which the widget changed: a reply
    box grows with each streamed token, so each frame rendered all its lines.
    A container draws nothing of its own between its borders (its children
    are drawn over it), so this renders that middle once and repeats it, and
    its content line is a blank strip, without Textual's render cache. Only
    for a widget with nothing that varies by line between its borders: no
    content of its own, no gradient or image background. Give it as a later
    base: Textual takes a widget's CSS type names from its first bases.
    """

    def render_line(self, y: int) -> Strip:
        # A container's content is blank: its children are drawn over it.
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def render_lines(self, crop: Region) -> list[Strip]:
        first, last = crop.y, crop.bottom - 1
        middle_first, middle_last = max(first, 1), min(last, self.outer_size.height - 2)
        if middle_last - middle_first < 2:
            return super().render_lines(crop)
        x, width = crop.x, crop.width
        above = super().render_lines(Region(x, first, width, middle_first - first))
        middle = super().render_lines(Region(x, middle_first, width, 1))
        below = super().render_lines(Region(x, middle_last + 1, width, last - middle_last))
        return above + middle * (middle_last - middle_first + 1) + below
