"""Folding: hide a container's leading children that are out of sight, with nothing moving.

Every screen refresh lays out every displayed widget, so content above the
view costs time on each frame of a streaming reply without being seen. A
`Fold` hides such children behind one blank spacer of the same height (the
container's first child), so the screen and the scroll position stay the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from textual.widget import Widget
from textual.widgets import Static


class Fold:
    """The folded leading children of one container, and the spacer that stands in for them."""

    def __init__(self) -> None:
        self.spacer = Static(classes="fold-spacer")
        self.spacer.display = False
        self._folded: list[Widget] = []

    @property
    def folded(self) -> list[Widget]:
        """The hidden children, in order."""
        return list(self._folded)

    def __len__(self) -> int:
        return len(self._folded)

    def fold(self, children: Sequence[Widget], top: int) -> int:
        """Hide the leading `children` (the spacer not among them) that end at or above `top`.

        `top` is in the container's virtual coordinates, and the measure is the
        last layout: call this when that is current. Returns how many were hidden.
        """
        newly: list[Widget] = []
        bottom = 0  # Of the last child to fold, without its margin.
        for child in children[len(self._folded) :]:
            region = child.virtual_region  # Empty when not laid out yet.
            if not (child.display and region):
                break  # Hidden, or not laid out yet: this one and the rest stay.
            if isinstance(child, Settles) and not child.settled():
                break  # Its height is not final: the spacer would keep a wrong one.
            if region.bottom + child.styles.margin.bottom > top:
                break  # Not far enough above: this one and the rest stay.
            newly.append(child)
            bottom = region.bottom
        if not newly:
            return 0
        # The spacer ends where the last folded child's margin ends: the next child's
        # top margin then collapses against the same bottom margin as before.
        self.spacer.styles.height = bottom
        self.spacer.styles.margin = (0, 0, newly[-1].styles.margin.bottom, 0)
        for child in newly:
            child.display = False
        self.spacer.display = True
        self._folded.extend(newly)
        return len(newly)

    def unfold(self) -> None:
        """Show every folded child again."""
        if not self._folded:
            return
        for child in self._folded:
            child.display = True
        self._folded.clear()
        self.spacer.display = False


@runtime_checkable
class FoldsInside(Protocol):
    """A widget that can fold its own content above a line of the screen."""

    def fold_above(self, screen_y: int) -> int:
        """Fold what ends above `screen_y` (a screen row); return how much was folded."""
        ...

    def unfold(self) -> None:
        """Show everything folded again."""
        ...

    def tail_height(self) -> int:
        """The most its content can shrink as it grows: the height of its last block.

        A streamed reply re-parses only its last block, which can come out
        shorter (a paragraph that turns into a table, say).
        """
        ...


@runtime_checkable
class Settles(Protocol):
    """A widget whose content can arrive after it is laid out (a reply's Markdown, parsed
    on a worker thread): its height is final only once `settled()`.

    A child folded before then would leave the spacer standing for the height it
    had without that content, for as long as it stays folded (a hidden widget is
    not laid out again): the list too short, its scrollbar and Page Up wrong.
    """

    def settled(self) -> bool:
        """Whether the last layout measured all of its content."""
        ...
