"""The conversation list (search, new, switch, rename, delete) and its small dialogs.

It shows the latest `SHOWN` conversations, each with its date and last model;
what the user types in the filter above narrows them, through the store's
full-text search of titles and messages, at every key. The focus stays in the
filter: the arrow keys move the highlight, Enter opens, and the actions that
letters did before take Ctrl (a letter is a search now).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatui._textual.footer import KeyFooter
from chatui.sanitize import one_line
from chatui.store import ConversationSummary, Store

NEW = "__new__"
SHOWN = 200  # Rows at most: the list opens as fast with 10,000 conversations as with 10.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DATE_WIDTH = len("30 Dec 2025")
MODEL_SHARE = 3  # The model's column: its longest name shown, up to a third of the width; cut.
TITLE_LIMIT = 500  # Characters of a title read at most, before it is cut to the row.


def when(updated: float, now: float) -> str:
    """`updated` as the list shows it: "14:02" today, "3 Dec" this year, "3 Dec 2025" before.

    Local time, in English month names whatever the locale, as the rest of the UI.
    """
    moment, today = datetime.fromtimestamp(updated), datetime.fromtimestamp(now)
    if moment.date() == today.date():
        return f"{moment:%H:%M}"
    day = f"{moment.day} {MONTHS[moment.month - 1]}"
    return day if moment.year == today.year else f"{day} {moment.year}"


class ConversationRows(OptionList):
    """The rows of the list, laid out anew for each width: the title, its date, its model.

    It never takes the focus: that stays in the filter, whose keys move its highlight.
    """

    can_focus = False

    def __init__(self) -> None:
        super().__init__(id="conversation-options")
        self.rows: list[ConversationSummary] = []
        self.marks: dict[str, str] = {}  # "(open)" and the like, after a row's title.
        self.now = 0.0

    def show(
        self,
        rows: Sequence[ConversationSummary],
        marks: dict[str, str],
        now: float,
        select: str | None,
    ) -> None:
        """Show `rows`, highlighting `select` if it is one of them, else the first."""
        self.rows, self.marks, self.now = list(rows), marks, now
        self._lay_out()
        ids = [row.id for row in self.rows]
        self.highlighted = ids.index(select) if select in ids else 0 if ids else None

    def highlighted_row(self) -> ConversationSummary | None:
        if self.highlighted is None or not 0 <= self.highlighted < len(self.rows):
            return None
        return self.rows[self.highlighted]

    def on_resize(self, event: events.Resize) -> None:
        highlighted = self.highlighted
        self._lay_out()
        self.highlighted = highlighted

    def _lay_out(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        models = [
            Content.styled(one_line(row.last_model or row.last_provider, 100), "dim")
            for row in self.rows
        ]
        longest = max((model.cell_length for model in models), default=0)
        model_width = min(longest, width // MODEL_SHARE)  # The same for every row.
        title_width = max(width - DATE_WIDTH - model_width - 4, 8)
        options = []
        # Content, not markup: the titles and models are not ours.
        for row, model in zip(self.rows, models, strict=True):
            title = Content(one_line(row.title, TITLE_LIMIT))
            if mark := self.marks.get(row.id):  # The title is cut first: the mark stays whole.
                title = title.truncate(max(title_width - len(mark) - 2, 8), ellipsis=True)
                title = Content.assemble(title, "  ", (mark, "dim"))
            line = Content.assemble(
                title.truncate(title_width, ellipsis=True, pad=True),
                f"  {when(row.updated, self.now):>{DATE_WIDTH}}  ",
                model.truncate(model_width, ellipsis=True),
            )
            options.append(Option(line, id=row.id))
        self.set_options(options)


class ConversationList(ModalScreen[str | None]):
    """Find and pick a conversation. Dismisses with its id, `NEW`, or None."""

    # Priority: the filter would take Enter (to submit) and Ctrl+D (to delete a character).
    BINDINGS = [
        Binding("enter", "open", "Open", priority=True),
        Binding("ctrl+n", "new", "New", priority=True),
        Binding("ctrl+r", "rename", "Rename", priority=True),
        Binding("ctrl+d", "delete", "Delete", priority=True),
        Binding("escape", "dismiss(None)", "Close", priority=True),
        Binding("up", "move('cursor_up')", show=False),
        Binding("down", "move('cursor_down')", show=False),
        Binding("pageup", "move('page_up')", show=False),
        Binding("pagedown", "move('page_down')", show=False),
    ]

    def __init__(
        self,
        store: Store,
        current_id: str,
        delete: Callable[[str], Awaitable[None]],
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`delete` removes a conversation (stopping its turn first, if one runs).

        `now` gives the wall clock's time, from which the dates read "today".
        """
        super().__init__()
        self.store = store
        self.current_id = current_id
        self._delete = delete
        self._now = now

    def compose(self) -> ComposeResult:
        with Vertical(id="conversation-dialog") as dialog:
            dialog.border_title = "Conversations"
            yield Input(placeholder="Search titles and messages", id="conversation-filter")
            yield ConversationRows()
            yield Label(id="conversation-count")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._reload(select=self.current_id)

    @property
    def rows(self) -> ConversationRows:
        return self.query_one(ConversationRows)

    @property
    def filter_text(self) -> str:
        return self.query_one(Input).value

    def _reload(self, select: str | None = None) -> None:
        """Show the latest conversations that match the filter, keeping `select` highlighted."""
        matching = self.filter_text
        try:
            found = self.store.summaries(limit=SHOWN + 1, matching=matching)
            total = None if matching.strip() else self.store.conversation_count()
            elsewhere = self.store.owned_by_others(row.id for row in found[:SHOWN])
        except sqlite3.Error as error:
            message = f"The conversations could not be read: {error}"
            self.notify(message, severity="error", markup=False)
            return
        marks = {row.id: "(open in another chatui)" for row in found if row.id in elsewhere}
        marks[self.current_id] = "(open)"
        self.rows.show(found[:SHOWN], marks, self._now(), select)
        self.query_one("#conversation-count", Label).update(
            Text(_count_line(len(found), total, matching))
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "conversation-filter":
            highlighted = self.rows.highlighted_row()
            self._reload(select=None if highlighted is None else highlighted.id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_move(self, how: str) -> None:
        getattr(self.rows, f"action_{how}")()

    def action_open(self) -> None:
        if (row := self.rows.highlighted_row()) is not None:
            self.dismiss(row.id)

    def action_new(self) -> None:
        self.dismiss(NEW)

    def action_rename(self) -> None:
        if (row := self.rows.highlighted_row()) is None:
            return
        conversation_id = row.id

        def renamed(new_title: str | None) -> None:
            if new_title:
                try:
                    self.store.rename_conversation(conversation_id, new_title)
                except sqlite3.Error as error:
                    message = f"The conversation could not be renamed: {error}"
                    self.notify(message, severity="error", markup=False)
                self._reload(select=conversation_id)

        self.app.push_screen(TextPrompt("Rename conversation", row.title), renamed)

    def action_delete(self) -> None:
        if (row := self.rows.highlighted_row()) is None:
            return
        conversation_id = row.id

        async def confirmed(answer: str | None) -> None:
            if answer is not None:
                await self._delete(conversation_id)
                self._reload()

        question = f"Delete “{one_line(row.title, TITLE_LIMIT)}”? Enter deletes"
        self.app.push_screen(TextPrompt(question, None), confirmed)


def _count_line(found: int, total: int | None, matching: str) -> str:
    """What the line under the rows says: how many there are, and how to find the others."""
    if total is not None:  # No filter: the latest conversations.
        if total > SHOWN:
            return f"The latest {SHOWN} of {total:,} conversations. Type to search them all."
        return "1 conversation." if total == 1 else f"{total:,} conversations."
    if found > SHOWN:
        return f"{SHOWN} shown, and more match. Type more words to narrow them."
    if found == 0:
        return f"No conversation holds “{one_line(matching.strip(), 60)}”."
    return "1 conversation matches." if found == 1 else f"{found} conversations match."


class TextPrompt(ModalScreen[str | None]):
    """A one-line question. With `value` None it is a confirmation (Enter = yes)."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("enter", "confirm", "Yes", show=False),
    ]

    def __init__(self, question: str, value: str | None) -> None:
        super().__init__()
        self.question = question
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-dialog"):
            yield Label(Text(self.question))
            if self.value is not None:
                yield Input(self.value, id="prompt-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_confirm(self) -> None:
        if self.value is None:
            self.dismiss("yes")
