"""The floor of `startup.py`: a bare Textual app drawing what chatui's first frame shows.

    python bench/_startup_floor.py

Stock Textual widgets only, no chatui code and no other import: an empty
scrolling list, a `TextArea` composer whose placeholder starts with
"Message…" (as chatui's does), a one-line status " floor │ idle" (the form of
chatui's status bar) and a `Footer`. Run as a script, by path: importing the
`bench` package would import chatui (`bench._common` does).
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static, TextArea


class FloorApp(App[None]):
    CSS = """
    #messages { height: 1fr; }
    #composer { height: 3; }
    #status { height: 1; }
    """
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="messages")
        yield TextArea(id="composer", placeholder="Message… (Enter sends)")
        yield Static(" floor │ idle", id="status", markup=False)
        yield Footer()


if __name__ == "__main__":
    FloorApp().run()
