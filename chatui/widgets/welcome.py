"""What an empty conversation shows: who will answer, the main keys, and setup help."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from chatui.sanitize import visible

KEYS = (
    (("Enter", "send"), ("Esc", "stop the reply"), ("Ctrl+L", "switch model")),
    (("Ctrl+N", "new conversation"), ("Ctrl+O", "conversations"), ("Ctrl+P", "commands")),
)
SETUP = (
    "Remote models: set OPENAI_API_KEY or ANTHROPIC_API_KEY, or base_url under [openai] "
    "for an OpenAI-compatible server (Ollama, LM Studio, vLLM, llama.cpp server), "
    "then Ctrl+L. See config.example.toml."
)


class Welcome(Static):
    """The empty conversation's page. `show()` it again when the provider changes."""

    def __init__(self) -> None:
        super().__init__(id="welcome")

    def show(self, who: tuple[str, str] | None, problem: str | None, *, checking: bool) -> None:
        """`who`: (provider, model), None if there is none; `problem`: why it cannot answer.

        `checking`: whether it can is not known yet (a model loads, a server is probed).
        """
        text = Text()
        if who is None:
            text.append("No model can answer yet.", style="bold")
        else:
            text.append("Replies come from ")
            text.append(visible(" · ".join(name for name in who if name)), style="bold")
        if problem:
            text.append(f"\n✗ {visible(problem)}", style="red")
        elif checking:
            text.append("\n… getting it ready", style="dim")
        else:
            text.append("\n✓ ready", style="green")
        text.append("\n")
        for row in KEYS:
            text.append("\n")
            for n, (key, what) in enumerate(row):
                text.append(f"{key} ", style="bold")
                text.append(what + ("   " if n < len(row) - 1 else ""))
        text.append(f"\n\n{SETUP}", style="dim")
        self.update(text)
