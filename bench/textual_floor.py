"""The floor under chatui's stop latency: Esc in a bare Textual app streaming Markdown.

The same harness as `stop_latency.py` (a stream at a set rate, Esc pressed
after a random 5 to 60 ms, 20 replies per conversation) around the least a
Textual app can do: one anchored `VerticalScroll`, one `Markdown` widget per
reply fed through `MarkdownStream`, and an Esc binding that stops the stream.
No chatui code runs. Esc waits for whatever the event loop is doing when it
arrives, mostly a screen refresh, so this measures what the stack itself costs.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

from markdown_it import MarkdownIt
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Markdown

from bench._common import (
    ESC_COLUMNS,
    esc_figures,
    percentile,
    print_results,
    prose_tokens,
    run_esc_trials,
    write_json,
)

frame_ms: list[float] = []
_update = Screen._on_timer_update


def _timed_update(self: Screen) -> None:
    start = time.perf_counter()
    _update(self)
    frame_ms.append((time.perf_counter() - start) * 1000)


Screen._on_timer_update = _timed_update  # type: ignore[method-assign]
PARSER = MarkdownIt("gfm-like")


class FloorApp(App[None]):
    """Streams prose into a Markdown widget until Esc."""

    BINDINGS = [Binding("escape", "stop", "Stop")]

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.stream_task: asyncio.Task[None] | None = None
        self.stopped_at = 0.0

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="messages")

    async def start_reply(self) -> None:
        messages = self.query_one("#messages", VerticalScroll)
        markdown = Markdown(parser_factory=lambda: PARSER)
        await messages.mount(markdown)
        messages.anchor()
        self.stream_task = asyncio.create_task(self._stream(Markdown.get_stream(markdown)))

    async def _stream(self, stream) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            for n, token in enumerate(prose_tokens()):
                delay = start + n / self.rate - time.perf_counter()
                await asyncio.sleep(max(delay, 0))
                await stream.write(token)
        finally:
            await stream.stop()

    def action_stop(self) -> None:
        if self.stream_task is not None:
            self.stream_task.cancel()
            self.stopped_at = time.perf_counter()


async def measure(rate: int, trials: int, seed: int, size: tuple[int, int]) -> dict:
    rng = random.Random(seed)
    app = FloorApp(rate)
    acked: list[float] = []
    async with app.run_test(size=size) as pilot:
        frame_ms.clear()
        for trial in range(trials):
            if trial % 20 == 0:
                await app.query_one("#messages").remove_children()
            await app.start_reply()
            await asyncio.sleep(rng.uniform(0.005, 0.060))
            pressed = time.perf_counter()
            await pilot.press("escape")
            assert app.stream_task is not None
            await asyncio.wait([app.stream_task])
            acked.append((app.stopped_at - pressed) * 1000)
            await pilot.pause(0.02)
        frames = list(frame_ms)
    return {
        **esc_figures(size, rate, acked),
        "frame_p50_ms": percentile(frames, 50),
        "frame_p99_ms": percentile(frames, 99),
    }


def main() -> int:
    args, results = run_esc_trials(__doc__.splitlines()[0], measure)
    print_results(
        "Bare Textual: Esc → handler, and screen refresh times (ms)",
        [
            *ESC_COLUMNS,
            ("frame p50", "frame_p50_ms"),
            ("frame p99", "frame_p99_ms"),
        ],
        results,
    )
    print("No chatui code: one Markdown widget per reply in an anchored VerticalScroll.")
    write_json(args.json, {"benchmark": "textual_floor", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
