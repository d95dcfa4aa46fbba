"""A compositor that looks widgets up in the map its last layout has just built."""

from __future__ import annotations

from textual._compositor import Compositor, MapGeometry, ReflowResult
from textual.errors import NoWidget
from textual.geometry import Size
from textual.screen import Screen
from textual.widget import Widget


class FreshMapCompositor(Compositor):
    """Textual's compositor, minus a second layout of the screen in many frames.

    When a frame starts with a widget that is new or out of sight marked for
    redraw, Textual flags its map of every widget as stale. The layout that
    follows builds that map again, but the flag stays set, so the first widget
    to ask for its region in that frame (every widget whose size changed does)
    has the whole screen laid out a second time: about 1.2 ms on a 100x40
    chat, in the frames where a reply starts or adds a block.

    Here, as long as no scroll-only layout has moved things since, widgets
    are looked up in the map of the last full layout, and one that it did not
    place (mounted since, say) is reported as not in the layout yet: the next
    layout places it. Textual answers the same when its flag is clear; with
    the flag set it would lay the screen out to answer, though the widget's
    first refresh (the usual asker) has no use for the answer.
    """

    _map_is_current = False

    def reflow(self, parent: Widget, size: Size) -> ReflowResult:
        result = super().reflow(parent, size)
        self._map_is_current = True
        return result

    def reflow_visible(self, parent: Widget, size: Size) -> set[Widget]:
        self._map_is_current = False  # Only what is in sight is placed again.
        return super().reflow_visible(parent, size)

    def clear(self) -> None:
        self._map_is_current = False
        super().clear()

    def find_widget(self, widget: Widget) -> MapGeometry:
        if not self._map_is_current:
            return super().find_widget(widget)
        try:
            return self._full_map[widget]
        except KeyError:
            raise NoWidget("Widget is not in layout") from None


def use_fresh_compositor(screen: Screen) -> None:
    """Give `screen`, before it is mounted, a `FreshMapCompositor`.

    Textual creates each screen's compositor in `Screen.__init__` and has no
    setting for its class; `tests/test_fresh_compositor.py` fails if that changes.
    """
    screen._compositor = FreshMapCompositor()
