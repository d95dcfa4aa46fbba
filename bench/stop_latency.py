"""Esc → stop acknowledged, at several streaming rates, inside App.run_test().

For each rate, a provider streams tokens for ever; after a random delay the
benchmark presses Esc and measures the time until the reply is marked
interrupted (the acknowledgement: the view closed, the marker set), until
the marker has been drawn to the terminal, and until the turn's work has
stopped (stream closed, partial stored). It then counts the tokens that
reached the widget after the acknowledgement, and checks that the text on
screen is exactly the text stored.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Markdown

from bench._common import (
    ESC_COLUMNS,
    PacedProvider,
    esc_figures,
    percentile,
    print_results,
    run_esc_trials,
    write_json,
)
from chatui.app import ChatApp
from chatui.config import Config
from chatui.messages import ResponseState
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.composer import Composer

watched: list[Widget] = []  # The marker of the reply being stopped.
marker_drawn: list[float] = []  # When the first screen refresh that showed it ended.
_refresh = Screen._compositor_refresh


def _recording_refresh(self: Screen) -> None:
    _refresh(self)
    if watched and watched[0].region.height and not marker_drawn:
        marker_drawn.append(time.perf_counter())


Screen._compositor_refresh = _recording_refresh  # type: ignore[method-assign]


async def wait_for_outcome(app: ChatApp, turn) -> None:  # type: ignore[no-untyped-def]
    while app.last_outcome is None or app.last_outcome.turn_id != turn.id:
        await asyncio.sleep(0.001)


async def measure_rate(rate: int, trials: int, seed: int, size: tuple[int, int]) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        stored_at: list[float] = []  # When each interrupted reply was stored.
        save_item = store.save_item

        def timed_save_item(conversation_id: str, item: object) -> None:
            save_item(conversation_id, item)
            if getattr(item, "state", None) is ResponseState.INTERRUPTED:
                stored_at.append(time.perf_counter())

        store.save_item = timed_save_item  # type: ignore[method-assign]
        provider = PacedProvider(rate)
        app = ChatApp(Config(system_prompt=""), store, provider, clock=time.perf_counter)
        acked: list[float] = []
        drawn: list[float] = []
        stopped: list[float] = []
        late = mismatches = 0
        async with app.run_test(size=size) as pilot:
            for trial in range(trials):
                if trial % 20 == 0:
                    await app.open_conversation(None)
                provider.started = asyncio.Event()
                # Not pilot.press: it waits for an idle app, which a fast stream never is.
                app.chat.post_message(Composer.Submitted(f"trial {trial}"))
                await asyncio.wait_for(provider.started.wait(), 30)
                await asyncio.sleep(rng.uniform(0.005, 0.060))
                turn = app.chat.turn
                view = app.screen.query(AssistantMessage).last()
                watched[:] = [view.query_one(".marker")]
                marker_drawn.clear()
                pressed = time.perf_counter()
                await pilot.press("escape")
                deadline = time.monotonic() + 30
                while turn.running:
                    assert time.monotonic() < deadline, f"trial {trial}: the turn did not stop"
                    await asyncio.sleep(0.0005)
                ended = stored_at[-1]  # The partial reply stored: the work is over.
                acked.append((view.stopped_at - pressed) * 1000)
                stopped.append((ended - pressed) * 1000)
                await wait_for_outcome(app, turn)
                await pilot.pause(0.02)  # Anything late would arrive now.
                assert marker_drawn, f"trial {trial}: the marker was never drawn"
                drawn.append((marker_drawn[0] - pressed) * 1000)
                late += view.late_writes
                shown = "".join(m.source for m in view.query(Markdown))
                mismatches += int(shown != view.response.text)
                if trial % 50 == 49:
                    print(f"  {rate} tokens/s: {trial + 1} trials", file=sys.stderr, flush=True)
            await app.action_quit()
        store.close()
    return {
        **esc_figures(size, rate, acked),
        "drawn_p50_ms": percentile(drawn, 50),
        "drawn_p99_ms": percentile(drawn, 99),
        "work_stopped_p50_ms": percentile(stopped, 50),
        "work_stopped_p99_ms": percentile(stopped, 99),
        "tokens_after_ack": late,
        "screen_store_mismatches": mismatches,
    }


def main() -> int:
    args, results = run_esc_trials(__doc__.splitlines()[0], measure_rate)
    print_results(
        "Esc → stop acknowledged (goal: ack p99 ≤ 10 ms, 0 tokens after acknowledgement)",
        [
            *ESC_COLUMNS,
            ("drawn p50", "drawn_p50_ms"),
            ("drawn p99", "drawn_p99_ms"),
            ("stopped p50", "work_stopped_p50_ms"),
            ("stopped p99", "work_stopped_p99_ms"),
            ("tokens after ack", "tokens_after_ack"),
            ("screen≠store", "screen_store_mismatches"),
        ],
        results,
    )
    print("Times in ms from the Esc key event. 'ack': the reply is marked interrupted (no")
    print("more text reaches it). 'drawn': the marker is on the terminal. 'stopped': the")
    print("turn's task has ended (stream closed, partial reply stored). A real Linux")
    print("terminal adds its Esc delay (~100 ms without the kitty keyboard protocol)")
    print("before the key event exists.")
    write_json(args.json, {"benchmark": "stop_latency", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
