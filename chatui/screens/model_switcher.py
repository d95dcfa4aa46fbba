"""The model switcher: the provider and the model that answer from the next turn on."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from chatui._textual.footer import KeyFooter
from chatui.providers.registry import ModelChoice, model_label
from chatui.sanitize import visible


class ModelSwitcher(ModalScreen[ModelChoice | None]):
    """Pick a provider's configured model, or type another model's name for it.

    Each choice comes with why it cannot answer, if that is known (a missing
    key); such a choice is shown but cannot be picked. Dismisses with the
    chosen `ModelChoice`, or None. The model in use is marked, and so is the
    open conversation's own (`own`), which opening it answers with.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(
        self,
        choices: list[tuple[ModelChoice, str | None]],
        current: ModelChoice,
        *,
        own: ModelChoice | None = None,
    ) -> None:
        super().__init__()
        self.choices = [choice for choice, _problem in choices]
        self._problems = [problem for _choice, problem in choices]
        self.current = current
        self.own = own

    def compose(self) -> ComposeResult:
        with Vertical(id="model-dialog") as dialog:
            dialog.border_title = "Switch model"
            yield OptionList(*self._options(), id="model-options")
            yield Input(
                placeholder="Other model of the highlighted provider: type its name, Enter",
                id="model-name",
            )
        yield KeyFooter()

    def _options(self) -> list[Option]:
        options = []
        for choice, problem in zip(self.choices, self._problems, strict=True):
            label = Text()
            label.append(f"{choice.provider:<10}", style="bold")
            label.append(visible(choice.label))  # A model's name is not ours: shown literally.
            marks = ["● in use"] if choice == self.current else []
            if choice == self.own:
                marks.append("this conversation's")
            if marks:
                label.append(f"  {' · '.join(marks)}", style="dim")
            if problem:
                label.append(f"\n✗ {visible(problem)}", style="dim")
            options.append(Option(label, disabled=bool(problem)))
        return options

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.choices:
            options.highlighted = self.choices.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        highlighted = self.query_one(OptionList).highlighted
        if not name or highlighted is None:
            return
        provider = self.choices[highlighted].provider
        self.dismiss(ModelChoice(provider, name, model_label(provider, name)))
