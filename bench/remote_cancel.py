"""Esc → the server sees the disconnect, for both SDK providers, against loopback servers.

For each provider (openai, anthropic) and each state (streaming at 200 and at
2,000 tokens/s, and stalled after a few tokens), a reply is started through
chatui's real path (`Turn` with `OpenAIProvider` or `AnthropicProvider` on the
real SDK). After a random number of tokens, `Turn.cancel()` is called (what
Esc does). The figure is the time from that call to the moment the server
(`tests/wire.py`, on its own thread) saw the client's socket close. Both read
the same clock (`time.monotonic`). "tokens after ack" counts events that
reached the UI (the turn's observer) after the cancel; the goal is 0.

The floor, in the same run: a bare task reading the same stream with the same
SDK (`create()`, then `async for`), cancelled, and its stream closed in a
`finally`.

Goals: p99 ≤ 20 ms; chatui's p50 within 2 ms of the floor's; 0 tokens after ack.

Then, for each provider, Esc while a shell tool runs (`bench/_shell_stop.py`):
the model's reply calls the real shell tool with a command that starts a
child and a grandchild; from `Turn.cancel()` to the moment no process of the
group is alive. Goal: p99 ≤ 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai

from bench._common import parser, percentile, print_table, write_json
from bench._shell_stop import GOAL_P99_MS, shell_stops
from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import TextDelta
from chatui.providers.openai_chat import OpenAIProvider
from chatui.store import Store
from chatui.turn import QuietObserver, Turn, TurnEvent
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.wire import STALL, Sleep, Step, WireServer

KEY = "sk-bench"
LONG = 20_000  # Tokens in a streaming reply: far more than any trial reads.


def paced(provider: str, rate: float | None) -> list[Step]:
    """A reply streaming at `rate` tokens/s (None: 40 tokens, then a stall)."""
    count = LONG if rate is not None else 40
    pause = [Sleep(1 / rate)] if rate is not None else []
    if provider == "openai":
        tokens = [step for _ in range(count) for step in (*ow.text("word "), *pause)]
        return [*tokens, STALL]
    head = [*aw.start(), *aw.text_block(0, stop=False)]
    delta = aw.event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "w "}}
    )
    return [*head, *[s for _ in range(count) for s in (delta, *pause)], STALL]


def make_provider(name: str, server: WireServer) -> Any:
    if name == "openai":
        return OpenAIProvider(OpenAIConfig(api_key=KEY, base_url=f"{server.base_url}/v1"))
    return AnthropicProvider(AnthropicConfig(api_key=KEY, base_url=server.base_url))


async def chatui_stop(server: WireServer, store: Store, provider: Any, after: int):
    """One stop through Turn: (ms from cancel to disconnect, events after the cancel)."""
    conversation = store.create_conversation()
    texts, late = 0, 0
    turn: Turn

    class Count(QuietObserver):
        async def on_event(self, event: TurnEvent) -> None:
            nonlocal texts, late
            if turn.token.cancelled:
                late += 1
            if isinstance(event.payload, TextDelta):
                texts += 1

    turn = Turn(
        conversation=conversation, prompt="go", provider=provider, store=store, observer=Count()
    )
    task = asyncio.create_task(turn.run())
    await _until(lambda: texts >= after)
    cancelled = time.monotonic()
    turn.cancel()
    await task
    return await _disconnect_ms(server, cancelled), late


async def floor_stop(name: str, server: WireServer, client: Any, after: int) -> float:
    """One stop of a bare SDK reader task, its stream closed in `finally`."""
    seen = 0

    async def read() -> None:
        nonlocal seen
        if name == "openai":
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True
            )
        else:
            stream = await client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "go"}], stream=True
            )
        try:
            async for _ in stream:
                seen += 1
        finally:
            await stream.close()

    task = asyncio.create_task(read())
    await _until(lambda: seen >= after)
    cancelled = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return await _disconnect_ms(server, cancelled)


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the stream never got that far")
        await asyncio.sleep(0.0005)


async def _disconnect_ms(server: WireServer, cancelled: float) -> float:
    request = server.requests[-1]
    if not await asyncio.to_thread(request.ended.wait, 10):
        raise TimeoutError("the server never saw the stream end")
    if request.disconnected_at is None:
        raise RuntimeError("the stream ended without a disconnect")
    return (request.disconnected_at - cancelled) * 1000


async def run_case(name: str, rate: float | None, stops: int, rng: random.Random) -> list[dict]:
    rows = []
    with WireServer() as server, tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        provider = make_provider(name, server)
        client = (
            openai.AsyncOpenAI(api_key=KEY, base_url=f"{server.base_url}/v1", max_retries=0)
            if name == "openai"
            else anthropic.AsyncAnthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
        )
        chatui_ms, floor_ms, late = [], [], 0
        for _ in range(stops):
            after = rng.randint(5, 30)
            server.play(paced(name, rate))
            ms, extra = await chatui_stop(server, store, provider, after)
            chatui_ms.append(ms)
            late += extra
            server.play(paced(name, rate))
            floor_ms.append(await floor_stop(name, server, client, after))
        await provider.close()
        await client.close()
        store.close()
    state = "stalled" if rate is None else f"{rate:g} tok/s"
    for who, values, after_ack in (("chatui", chatui_ms, late), ("SDK floor", floor_ms, None)):
        rows.append(
            {
                "provider": name,
                "state": state,
                "who": who,
                "stops": len(values),
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "max_ms": max(values),
                "tokens_after_ack": after_ack,
            }
        )
    return rows


def shell_call(provider: str, command: str) -> list[Step]:
    """A reply that calls the shell tool with `command`."""
    arguments = json.dumps({"command": command})
    if provider == "openai":
        return [*ow.tool_call(0, "call_1", "shell", arguments), *ow.ending("tool_calls")]
    return [*aw.start(), *aw.tool_block(0, "toolu_1", "shell", arguments), *aw.ending("tool_use")]


async def shell_case(name: str, stops: int) -> dict:
    with WireServer() as server:
        figures = await shell_stops(
            lambda _root: make_provider(name, server),
            lambda command: server.play(shell_call(name, command)),
            stops,
        )
    return {
        "provider": name,
        "stops": len(figures),
        "p50_ms": percentile(figures, 50),
        "p99_ms": percentile(figures, 99),
        "max_ms": max(figures),
        "all_ms": figures,
    }


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--stops", type=int, default=100, help="stops per case (each side)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--providers", nargs="+", default=["openai", "anthropic"])
    p.add_argument("--shell-stops", type=int, default=50, help="stops while a shell tool runs")
    p.add_argument("--parts", nargs="+", default=["stream", "shell"], help="what to measure")
    args = p.parse_args()
    rng = random.Random(args.seed)
    rows: list[dict] = []
    shells: list[dict] = []
    for name in args.providers:
        if "stream" in args.parts:
            for rate in (200.0, 2000.0, None):
                rows += await run_case(name, rate, args.stops, rng)
        if "shell" in args.parts:
            shells.append(await shell_case(name, args.shell_stops))
    if rows:
        print_stream_tables(rows)
    if shells:
        print_table(
            "Esc while a shell tool runs → its process group is gone "
            f"(ms; goal p99 ≤ {GOAL_P99_MS:g})",
            ["provider", "stops", "p50", "p99", "max", "goal"],
            [
                [s["provider"], s["stops"], s["p50_ms"], s["p99_ms"], s["max_ms"],
                 "met" if s["p99_ms"] <= GOAL_P99_MS else "NOT met"]
                for s in shells
            ],
        )  # fmt: skip
    write_json(args.json, {"benchmark": "remote_cancel", "results": rows, "shell": shells})


def print_stream_tables(rows: list[dict]) -> None:
    print_table(
        "Esc → the server sees the disconnect (ms)",
        ["provider", "state", "who", "stops", "p50", "p99", "max", "tokens after ack"],
        [
            [
                r["provider"],
                r["state"],
                r["who"],
                r["stops"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
                "" if r["tokens_after_ack"] is None else r["tokens_after_ack"],
            ]
            for r in rows
        ],
    )
    goals = []
    for chatui, floor in zip(rows[::2], rows[1::2], strict=True):
        case = f"{chatui['provider']} {chatui['state']}"
        goals.append([case, "p99 ≤ 20 ms", chatui["p99_ms"], chatui["p99_ms"] <= 20])
        gap = chatui["p50_ms"] - floor["p50_ms"]
        goals.append([case, "p50 within 2 ms of the floor", gap, gap <= 2])
        goals.append(
            [
                case,
                "0 tokens after ack",
                chatui["tokens_after_ack"],
                chatui["tokens_after_ack"] == 0,
            ]
        )
    print_table(
        "Goals",
        ["case", "goal", "figure", "met"],
        [[c, g, f, "met" if ok else "NOT met"] for c, g, f, ok in goals],
    )


if __name__ == "__main__":
    asyncio.run(main())
