"""The status line: provider and model, turn state, tokens, speed, latencies, context."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from chatui.messages import ModelResponse
from chatui.sanitize import visible

STATE_STYLES = {
    "idle": "dim",
    "loading": "ansi_yellow",
    "waiting": "ansi_yellow",
    "streaming": "ansi_green",
    "awaiting approval": "bold ansi_yellow",
    "running tools": "ansi_cyan",
    "stopping": "bold ansi_yellow",
    "stopped": "bold ansi_yellow",
    "failed": "bold ansi_red",
}


class StatusBar(Static):
    """One line under the composer.

    Text from a provider (its name, the model's) is plain `Content`: never
    parsed as markup. Token figures are read from `response` when the line is
    drawn, so a streaming reply costs one `refresh()` per frame (see
    `touch()`). All times come from the turn's clock.
    """

    provider: reactive[str] = reactive("")
    model: reactive[str] = reactive("")
    state: reactive[str] = reactive("idle")
    detail: reactive[str] = reactive("")
    stop_ms: reactive[float | None] = reactive(None)
    response: reactive[ModelResponse | None] = reactive(None, always_update=True)
    # The request's prompt in tokens and the model's context window, once a request said.
    context: reactive[tuple[int, int] | None] = reactive(None)
    _stale = False

    def touch(self) -> None:
        """Redraw at the next frame. Cheap enough to call for every token."""
        if not self._stale:
            self._stale = True
            self.refresh()

    def render(self) -> Content:
        # Textual's Content, not Rich Text: this line is drawn on every frame of a
        # stream, and Content renders without Rich's console pipeline.
        self._stale = False
        style = STATE_STYLES.get(self.state, "")
        parts: list[str | tuple[str, str]] = [(f" {visible(self.provider)}", "bold")]
        if self.model:
            parts.append(f" · {visible(self.model)}")
        parts += [
            " │ ",
            (self.detail if self.state == "loading" and self.detail else self.state, style),
        ]
        if self.detail and self.state != "loading":
            parts.append((f" {self.detail}", style))
        if self.state == "stopped" and self.stop_ms is not None:
            parts.append((f" in {self.stop_ms:.1f} ms", style))
        if (context := self.context) is not None:  # Before the speed figures: a narrow
            prompt, window = context  # terminal cuts those first.
            reply = self.response
            used = prompt + (max(reply.usage.output_tokens, reply.received) if reply else 0)
            parts.append(f" │ ctx {_tokens(used)}/{_tokens(window)}")
        if (response := self.response) is not None:
            usage, timings = response.usage, response.timings
            tokens = max(usage.output_tokens, response.received)
            estimated = usage.estimated or (response.received and not usage.output_tokens)
            parts.append(f" │ {'~' if estimated else ''}{tokens} tok")
            if (speed := timings.tokens_per_second(response.received)) is not None:
                parts.append(f" │ {speed:.0f} tok/s")
            if (first := timings.time_to_first_token) is not None:
                parts.append(f" │ TTFT {first * 1000:.0f} ms")
        return Content.assemble(*parts)


def _tokens(count: int) -> str:
    """A token count, short: 950, 4.1k, 128k."""
    if count < 1000:
        return str(count)
    return f"{count / 1000:.1f}k" if count < 100_000 else f"{count // 1000}k"
