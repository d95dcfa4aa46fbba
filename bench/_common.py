"""Shared bits of the benchmarks: percentiles, tables, --json, the paced provider."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from chatui.providers.base import ModelRequest, StreamEvent, TextDelta


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(title)
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()


def print_results(title: str, columns: Sequence[tuple[str, str]], results: list[dict]) -> None:
    """A table of `results`, one row each; `columns` are (header, key) pairs."""
    print_table(title, [h for h, _ in columns], [[r[k] for _, k in columns] for r in results])


def print_goals(checked: list[dict], width: int) -> None:
    """Each goal (`goals()`'s dicts: size, goal, value, met) on a line with its verdict."""
    print("Goals:")
    for goal in checked:
        value = goal["value"]
        shown = "-" if value is None else f"{value:.2f}"
        verdict = {None: "not run", True: "met", False: "NOT met"}[goal["met"]]
        print(f"  {goal['size']}  {goal['goal']:<{width}} {shown:>8}  {verdict}")
    print()


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[(80, 24), (100, 40)],
        help="terminal sizes, as WxH (default: 80x24 100x40)",
    )
    return p


ESC_COLUMNS = [
    ("terminal", "size"),
    ("tokens/s", "rate_tokens_per_s"),
    ("trials", "trials"),
    ("ack p50", "ack_p50_ms"),
    ("ack p95", "ack_p95_ms"),
    ("ack p99", "ack_p99_ms"),
    ("ack max", "ack_max_ms"),
]


def esc_figures(size: tuple[int, int], rate: int, acked: list[float]) -> dict:
    """The figures every Esc benchmark reports for one case (`acked`: ms per trial)."""
    return {
        "size": f"{size[0]}x{size[1]}",
        "rate_tokens_per_s": rate,
        "trials": len(acked),
        "ack_p50_ms": percentile(acked, 50),
        "ack_p95_ms": percentile(acked, 95),
        "ack_p99_ms": percentile(acked, 99),
        "ack_max_ms": max(acked),
    }


def run_esc_trials(
    description: str, measure: Callable[[int, int, int, tuple[int, int]], Awaitable[dict]]
) -> tuple[argparse.Namespace, list[dict]]:
    """Parse the Esc benchmarks' flags; run `measure(rate, trials, seed, size)` for each case."""
    p = parser(description)
    p.add_argument("--trials", type=int, default=200, help="Esc presses per rate")
    p.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    results = [
        asyncio.run(measure(rate, args.trials, args.seed, size))
        for size, rate in itertools.product(args.sizes, args.rates)
    ]
    return args, results


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def write_json(path: Path | None, figures: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n")


PROSE_TEXT = (
    "Streaming a reply into the terminal means appending a few characters at a time, "
    "while the user reads, scrolls, or changes their mind and presses Escape. "
    "Each fragment is untrusted text from a model: it may hold **bold words**, `code`, "
    "or [bracketed text] that must be shown as typed."
)
PROSE = PROSE_TEXT.split()


def prose_tokens():
    """Model-like tokens for ever: words of prose, a paragraph break every ~60."""
    n = 0
    while True:
        for word in PROSE:
            n += 1
            yield f"{word} " if n % 60 else f"{word}\n\n"


class BenchProvider:
    """A provider whose `_events()` is the stream; leaving the stream closes it."""

    name = "bench"
    model = "bench"

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        events = self._events()
        try:
            yield events
        finally:
            await events.aclose()

    def _events(self) -> AsyncGenerator[StreamEvent, None]:
        raise NotImplementedError


class PacedProvider(BenchProvider):
    """Streams prose tokens at `rate` tokens/s for ever, until the stream is closed."""

    name = "paced"

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = asyncio.Event()
        self.sent = 0

    async def _events(self) -> AsyncGenerator[StreamEvent, None]:
        start = time.perf_counter()
        self.started.set()
        tokens = prose_tokens()
        n = 0
        while True:
            due = start + n / self.rate
            delay = due - time.perf_counter()
            await asyncio.sleep(delay if delay > 0 else 0)
            n += 1
            self.sent += 1
            yield TextDelta(next(tokens))
