"""The status line: provider and model, turn state, tokens, speed, latencies."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from chatui.messages import ModelResponse

STATE_STYLES = {
    "idle": "dim",
    "loading": "yellow",
    "waiting": "yellow",
    "streaming": "green",
    "stopping": "bold yellow",
    "stopped": "bold yellow",
    "failed": "bold red",
}


class StatusBar(Static):
    """One line under the composer.

    Token figures are read from `response` when the line is drawn, so a
    streaming reply costs one `refresh()` per frame (see `touch()`).
    All times come from the turn's clock.
    """

    provider: reactive[str] = reactive("")
    model: reactive[str] = reactive("")
    state: reactive[str] = reactive("idle")
    detail: reactive[str] = reactive("")
    stop_ms: reactive[float | None] = reactive(None)
    response: reactive[ModelResponse | None] = reactive(None, always_update=True)
    _stale = False

    def touch(self) -> None:
        """Redraw at the next frame. Cheap enough to call for every token."""
        if not self._stale:
            self._stale = True
            self.refresh()

    def render(self) -> Text:
        self._stale = False
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {self.provider}", style="bold")
        if self.model:
            text.append(f" · {self.model}")
        text.append(" │ ")
        style = STATE_STYLES.get(self.state, "")
        text.append(self.detail if self.state == "loading" and self.detail else self.state, style)
        if self.detail and self.state != "loading":
            text.append(f" {self.detail}", style=style)
        if self.state == "stopped" and self.stop_ms is not None:
            text.append(f" in {self.stop_ms:.1f} ms", style=style)
        response = self.response
        if response is None:
            return text
        usage, timings = response.usage, response.timings
        tokens = max(usage.output_tokens, response.received)
        estimated = usage.estimated or (response.received and not usage.output_tokens)
        text.append(f" │ {'~' if estimated else ''}{tokens} tok")
        if (speed := timings.tokens_per_second(response.received)) is not None:
            text.append(f" │ {speed:.0f} tok/s")
        if (first := timings.time_to_first_token) is not None:
            text.append(f" │ TTFT {first * 1000:.0f} ms")
        return text
