"""The widgets of versions and edits: the edit banner, the "branched from" line, "2/3".

Retry and Edit keep the old exchange as a version; the reply (or the prompt,
while it has none) shows which version is on screen in its border's subtitle.
Editing a prompt shows a banner above the composer that says what Enter will
do with it. A forked conversation says at its top which one it came from:
that title is the user's or a model's text, shown as plain text.
"""

from __future__ import annotations

from rich.text import Text
from textual.content import Content
from textual.widgets import Static

from chatui.sanitize import visible

EDIT_LAST = "Editing your last prompt: Enter sends it as a new version; the old one stays"
EDIT_EARLIER = "Editing an earlier prompt: Enter sends it in a new, branched conversation"


def version_label(shown: int, total: int) -> Content:
    """The subtitle of an exchange with versions: "2/3", in angle quotes (Alt+Left, Alt+Right)."""
    return Content(f"‹ {shown}/{total} ›")


class EditBanner(Static):
    """One line above the composer while a prompt is being edited (Ctrl+E), hidden otherwise."""

    DEFAULT_CSS = """
    EditBanner {
        height: 1;
        width: 100%;
        padding: 0 1;
        background: $boost;
        color: $accent;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        display: none;
    }
    """

    def __init__(self) -> None:
        super().__init__(id="edit-banner")

    def show(self, *, last: bool) -> None:
        """Say what Enter does with the prompt in the composer: the last one, or an earlier one."""
        self.update(Text(EDIT_LAST if last else EDIT_EARLIER))
        self.display = True

    def hide(self) -> None:
        self.display = False


class BranchedFrom(Static):
    """The first line of a forked conversation: the title of the one it came from."""

    DEFAULT_CSS = """
    BranchedFrom {
        margin: 1 0 0 0;
        height: auto;
        color: $text-muted;
        text-style: italic;
        text-align: center;
    }
    """

    def __init__(self, title: str) -> None:
        super().__init__(Text(f"Branched from “{visible(title)}”"), id="branched-from")
