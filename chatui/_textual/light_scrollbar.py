"""A vertical scrollbar that draws its rows itself, for a list that scrolls on every frame."""

from __future__ import annotations

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget


class LightScrollBar(ScrollBar):
    """Textual's scrollbar, drawn without Rich's console.

    A reply anchored to the bottom of the view moves the scrollbar's thumb on
    almost every frame, and Textual renders the bar through Rich's console
    for its whole height each time: about 1.5 ms a frame on a 40-line
    terminal. This draws the same segments (`ScrollBarRender.render_bar`:
    same glyphs, colours and mouse actions) straight into one strip per row,
    on the widget's own style, and applies the app's line filters, as Textual
    would. A horizontal bar, a custom renderer, or CSS that styles the bar's
    box (border, padding, outline, tint, opacity) is left to Textual.
    """

    def render_lines(self, crop: Region) -> list[Strip]:
        bar = self.render()
        styles = self.styles
        if (
            not self.vertical
            or type(bar) is not ScrollBarRender
            or styles.gutter
            or any(edge for edge, _color in styles.outline)
            or styles.tint.a
            or self.opacity != 1
            or styles.text_opacity != 1
        ):
            return super().render_lines(crop)
        width, height = self.size
        style = bar.style if isinstance(bar.style, Style) else Style.parse(bar.style)
        rows = bar.render_bar(
            size=height,
            virtual_size=bar.virtual_size,
            window_size=bar.window_size,
            position=bar.position,
            thickness=width,
            vertical=True,
            back_color=style.bgcolor or Color.parse("#555555"),
            bar_color=style.color or Color.parse("bright_magenta"),
        ).segments
        base = self.visual_style.rich_style
        background = self.background_colors[1]
        filters = self.get_line_filters()
        strips: dict[Segment, Strip] = {}  # The bar is a few distinct rows, repeated.

        def strip(row: Segment) -> Strip:
            if row not in strips:
                line = Strip([Segment(row.text, base + row.style)], width)
                for line_filter in filters:
                    line = line.apply_filter(line_filter, background)
                if crop.column_span != (0, width):
                    line = line.crop(*crop.column_span)
                strips[row] = line
            return strips[row]

        return [strip(row) for row in rows[crop.y : crop.bottom]]


def light_vertical_scrollbar(widget: Widget) -> ScrollBar:
    """`widget`'s vertical scrollbar, a `LightScrollBar`, created as Textual creates its own.

    For a `vertical_scrollbar` property: Textual keeps the bar in the private
    `Widget._vertical_scrollbar` and starts it with `App._start_widget`.
    """
    bar = widget._vertical_scrollbar
    if bar is None:
        bar = LightScrollBar(
            vertical=True, name="vertical", thickness=widget.scrollbar_size_vertical
        )
        bar.display = False
        widget._vertical_scrollbar = bar
        widget.app._start_widget(widget, bar)
    return bar
