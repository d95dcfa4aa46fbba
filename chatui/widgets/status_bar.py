"""The status line: provider and model, turn state, tokens, speed, latencies, context."""

from __future__ import annotations

from enum import StrEnum

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from chatui.messages import ModelResponse
from chatui.sanitize import visible


class Phase(StrEnum):
    """What the app is doing, as the status line says it (its value is the word shown)."""

    IDLE = "idle"
    LOADING = "loading"  # The model is being prepared; the detail says how far.
    WAITING = "waiting"  # A prompt was sent; nothing has come back yet.
    STREAMING = "streaming"
    AWAITING_APPROVAL = "awaiting approval"
    RUNNING_TOOLS = "running tools"
    STOPPING = "stopping"  # Esc was pressed; the turn is winding down.
    STOPPED = "stopped"
    FAILED = "failed"


STATE_STYLES = {
    Phase.IDLE: "dim",
    Phase.LOADING: "ansi_yellow",
    Phase.WAITING: "ansi_yellow",
    Phase.STREAMING: "ansi_green",
    Phase.AWAITING_APPROVAL: "bold ansi_yellow",
    Phase.RUNNING_TOOLS: "ansi_cyan",
    Phase.STOPPING: "bold ansi_yellow",
    Phase.STOPPED: "bold ansi_yellow",
    Phase.FAILED: "bold ansi_red",
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
    state: reactive[Phase] = reactive(Phase.IDLE)
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
        state = self.state
        style = STATE_STYLES[state]
        parts: list[str | tuple[str, str]] = [(f" {visible(self.provider)}", "bold")]
        if self.model:
            parts.append(f" · {visible(self.model)}")
        loading = state is Phase.LOADING
        parts += [" │ ", (self.detail if loading and self.detail else state.value, style)]
        if self.detail and not loading:
            parts.append((f" {self.detail}", style))
        if state is Phase.STOPPED and self.stop_ms is not None:
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
