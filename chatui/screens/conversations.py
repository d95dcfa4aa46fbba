"""The conversation list (new, switch, rename, delete) and its small dialogs."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatui._textual.footer import KeyFooter
from chatui.sanitize import visible
from chatui.store import Store

NEW = "__new__"


class ConversationList(ModalScreen[str | None]):
    """Pick a conversation. Dismisses with its id, `NEW`, or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("n", "new", "New"),
        Binding("r", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
    ]

    def __init__(
        self, store: Store, current_id: str, delete: Callable[[str], Awaitable[None]]
    ) -> None:
        """`delete` removes a conversation (stopping its turn first, if one runs)."""
        super().__init__()
        self.store = store
        self.current_id = current_id
        self._delete = delete

    def compose(self) -> ComposeResult:
        with Vertical(id="conversation-dialog") as dialog:
            dialog.border_title = "Conversations"
            yield OptionList(id="conversation-options")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._reload(select=self.current_id)

    def _reload(self, select: str | None = None) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        rows = self.store.list_conversations()
        for conversation_id, title in rows:
            label = Text(visible(title))
            if conversation_id == self.current_id:
                label.append("  (open)", style="dim")
            elif self.store.owned_by_other(conversation_id):
                label.append("  (open in another chatui)", style="dim")
            options.add_option(Option(label, id=conversation_id))
        ids = [row[0] for row in rows]
        if select in ids:
            options.highlighted = ids.index(select)
        elif ids:
            options.highlighted = 0

    def _highlighted(self) -> tuple[str, str] | None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return None
        option = options.get_option_at_index(options.highlighted)
        assert option.id is not None
        title = dict(self.store.list_conversations()).get(option.id, "")
        return option.id, title

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_new(self) -> None:
        self.dismiss(NEW)

    def action_rename(self) -> None:
        if (chosen := self._highlighted()) is None:
            return
        conversation_id, title = chosen

        def renamed(new_title: str | None) -> None:
            if new_title:
                try:
                    self.store.rename_conversation(conversation_id, new_title)
                except sqlite3.Error as error:
                    message = f"The conversation could not be renamed: {error}"
                    self.notify(message, severity="error", markup=False)
                self._reload(select=conversation_id)

        self.app.push_screen(TextPrompt("Rename conversation", title), renamed)

    def action_delete(self) -> None:
        if (chosen := self._highlighted()) is None:
            return
        conversation_id, title = chosen

        async def confirmed(answer: str | None) -> None:
            if answer is not None:
                await self._delete(conversation_id)
                self._reload()

        self.app.push_screen(
            TextPrompt(f"Delete “{visible(title)}”? Enter deletes", None), confirmed
        )


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
