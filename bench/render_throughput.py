"""Stream rendering throughput into one message, and last-token-to-screen delay.

A provider emits N prose tokens as fast as the app takes them, then either
ends the reply or goes silent with the reply still open (a pause). The
benchmark measures the sustained rate (tokens / time from the first token
emitted to the Markdown widget having laid out the last token's text) and the
delay from the last token's emission to the end of the first screen refresh
that includes it. It runs with 1 and with 200 earlier messages in the
conversation.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path

from _common import parser, percentile, print_table, prose_tokens, write_json
from textual.await_complete import AwaitComplete
from textual.screen import Screen
from textual.widgets import Markdown

from chatui.app import ChatApp
from chatui.config import Config
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import ModelRequest, StreamEnd, StreamEvent, TextDelta
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage

refreshes: list[tuple[float, float]] = []  # (start, end) of each screen refresh
appends: list[tuple[float, int]] = []  # (time, source length) as each append completes
_refresh = Screen._compositor_refresh
_append = Markdown.append


def _recording_refresh(self: Screen) -> None:
    start = time.perf_counter()
    _refresh(self)
    refreshes.append((start, time.perf_counter()))


def _recording_append(self: Markdown, markdown: str) -> AwaitComplete:
    blocks_updated = _append(self, markdown)
    length = len(self.source)

    async def record() -> None:
        await blocks_updated
        appends.append((time.perf_counter(), length))

    return AwaitComplete(record())


Screen._compositor_refresh = _recording_refresh  # type: ignore[method-assign]
Markdown.append = _recording_append  # type: ignore[method-assign]


class BurstProvider:
    """Emits `count` tokens as fast as they are taken, then ends or stays silent."""

    name = "burst"
    model = "bench"

    def __init__(self, count: int, ends: bool) -> None:
        self.tokens = list(islice(prose_tokens(), count))
        self.ends = ends
        self.first_at = self.last_at = 0.0
        self.done = asyncio.Event()

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        events = self._events()
        try:
            yield events
        finally:
            await events.aclose()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        self.first_at = time.perf_counter()
        for token in self.tokens:
            yield TextDelta(token)
        self.last_at = time.perf_counter()
        self.done.set()
        if self.ends:
            yield StreamEnd("stop")
        await asyncio.Event().wait()


def seed_conversation(store: Store, messages: int) -> str:
    conversation = store.create_conversation(f"{messages} earlier messages")
    text = " ".join(islice(prose_tokens(), 120))
    for n in range(messages // 2):
        store.save_item(conversation.id, UserPrompt(f"Question {n}?"))
        response = ModelResponse("burst", "bench", state=ResponseState.COMPLETE)
        response.append_text(f"## Answer {n}\n\n{text}\n\n- one\n- two\n")
        store.save_item(conversation.id, response)
    return conversation.id


async def _first(candidates, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    """The first value `candidates()` yields, waiting for one; fails after `timeout` s."""
    deadline = time.perf_counter() + timeout
    while (found := next(candidates(), None)) is None:
        if time.perf_counter() > deadline:
            raise RuntimeError("the reply's last text never reached the screen")
        await asyncio.sleep(0.0002)
    return found


async def run(count: int, earlier: int, size: tuple[int, int], ends: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        conversation_id = seed_conversation(store, earlier - 1) if earlier > 1 else None
        provider = BurstProvider(count, ends)
        app = ChatApp(Config(system_prompt=""), store, provider)
        refreshes.clear()
        appends.clear()
        async with app.run_test(size=size) as pilot:
            if conversation_id is not None:
                await app.open_conversation(conversation_id)
            app.screen.query_one("#composer").text = "Write at length."
            await pilot.press("enter")
            await provider.done.wait()
            length = len("".join(provider.tokens))
            in_widget = await _first(lambda: (t for t, n in appends if n >= length))
            shown_by = await _first(lambda: (r for r in refreshes if r[0] >= in_widget))
            view = app.screen.query(AssistantMessage).last()
            assert "".join(m.source for m in view.query(Markdown)) == "".join(provider.tokens)
            await app.chat.stop_and_wait()
            await app.action_quit()
        store.close()
    return {
        "earlier_messages": earlier,
        "tokens": count,
        "tokens_per_s": count / (in_widget - provider.first_at),
        "last_token_to_screen_ms": (shown_by[1] - provider.last_at) * 1000,
        # Where that time goes: the last text being laid out, waiting for the next
        # frame, and the frame's refresh.
        "last_token_to_widget_ms": (in_widget - provider.last_at) * 1000,
        "widget_to_refresh_start_ms": (shown_by[0] - in_widget) * 1000,
        "refresh_ms": (shown_by[1] - shown_by[0]) * 1000,
        "emit_tokens_per_s": count / (provider.last_at - provider.first_at),
    }


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    args = p.parse_args()
    results = []
    for size, earlier in itertools.product(args.sizes, (1, 200)):
        case = {"size": f"{size[0]}x{size[1]}", "earlier_messages": earlier}
        for ends, mode in ((True, "ends"), (False, "pauses")):
            runs = [asyncio.run(run(args.tokens, earlier, size, ends)) for _ in range(args.repeat)]
            delays = [r["last_token_to_screen_ms"] for r in runs]
            case[f"runs_{mode}"] = runs
            case[f"tokens_per_s_{mode}"] = percentile([r["tokens_per_s"] for r in runs], 50)
            case[f"last_token_to_screen_ms_{mode}"] = percentile(delays, 50)
            case[f"last_token_to_screen_max_ms_{mode}"] = max(delays)
        case["tokens"] = args.tokens
        results.append(case)
    print_table(
        "Stream rendering into one message (goal: ≥ 2,500 tokens/s, ≤ 10 ms to screen)",
        [
            "terminal",
            "earlier messages",
            "tokens",
            "tokens/s",
            "last token → screen ms (reply ends)",
            "max",
            "(stream pauses)",
            "max",
        ],
        [
            [
                r["size"],
                r["earlier_messages"],
                r["tokens"],
                r["tokens_per_s_ends"],
                r["last_token_to_screen_ms_ends"],
                r["last_token_to_screen_max_ms_ends"],
                r["last_token_to_screen_ms_pauses"],
                r["last_token_to_screen_max_ms_pauses"],
            ]
            for r in results
        ],
    )
    print(f"Median (and max) of {args.repeat} runs, headless; prose with a paragraph break")
    print("every 60 tokens. 'reply ends': the stream ends after the last token, and the")
    print("end is drawn at once. 'stream pauses': it stays open and silent, and the last")
    print("text waits for the frame clock's next tick (Textual draws at most 60 frames/s).")
    write_json(args.json, {"benchmark": "render_throughput", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
