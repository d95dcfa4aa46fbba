"""The local provider with the default model (2 threads): stopping, prefill cost of
the abort callback, KV reuse after a cancel, reopening a saved conversation, and
Continue after a stop (against Retry and a cold context).

`--parts shell`: Esc while a shell tool runs → its process group is gone
(`bench/_shell_stop.py`; goal p99 ≤ 50 ms). The call is written by the tiny
test GGUF under the tool grammar (`tool_choice = "required"`, a schema that
allows one command): the default model takes about 12 s to write it (its
262,144-token vocabulary makes each grammar-checked token slow), and the
model has finished by the time the tool runs, so it does not change the figure."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import llama_cpp

from bench._common import PacedProvider, parser, percentile, print_table, write_json
from bench._shell_stop import GOAL_P99_MS, shell_stops
from chatui.app import ChatApp
from chatui.cancel import CancelToken
from chatui.config import Config, LocalConfig
from chatui.history import ChatMessage
from chatui.providers.base import ModelRequest, TextDelta
from chatui.providers.local.chat_format import GEMMA_TEMPLATE
from chatui.providers.local.llama_engine import GenerationJob, LlamaEngine
from chatui.providers.local.provider import (
    LocalProvider,
    assemble_default_model,
    default_model_path,
)
from chatui.store import Store
from chatui.turn import QuietObserver, Turn, TurnEvent, TurnSettings
from tests.support.tiny_gguf import write_tiny_model

PROSE = "the river runs past old stone houses where people talk about the weather and"
WORDS = PROSE.split()


def text_of(tokens: int) -> str:
    """Roughly `tokens` tokens of plain prose (about one token a word)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def config(**overrides: object) -> LocalConfig:
    values = dict(n_threads=2, n_ctx=4096, temperature=0.0, max_tokens=400)
    values.update(overrides)
    return LocalConfig(**values)  # type: ignore[arg-type]


# Esc -> decode returned


def stop_latencies(engine: LlamaEngine, phase: str, stops: int, rng: random.Random) -> list[float]:
    """Stop `stops` jobs at random moments in `phase`; ms from cancel to the engine's return."""
    prompt = text_of(2000) if phase == "prefill" else "Tell me a long story."
    llm = engine.llm
    assert llm is not None
    started = threading.Event()
    original = llm.eval

    def watched_eval(tokens: list[int]) -> None:
        in_phase = len(tokens) > 100 if phase == "prefill" else len(tokens) == 1
        if in_phase:
            started.set()
        original(tokens)

    llm.eval = watched_eval  # type: ignore[method-assign]
    latencies = []
    try:
        for _ in range(stops):
            started.clear()
            job = GenerationJob("bench", prompt, CancelToken(), lambda event: None)
            done = engine.call(lambda job=job: engine.generate(job))
            started.wait(60)
            time.sleep(rng.uniform(0.02, 1.0) if phase == "prefill" else rng.uniform(0.05, 0.5))
            pressed = time.perf_counter()
            job.cancel.cancel()
            done.result()
            assert job.stopped is not None, "the job ended before the stop"
            latencies.append((job.ended_at - pressed) * 1000)
    finally:
        llm.eval = original  # type: ignore[method-assign]
    return latencies


# Prefill with the UI streaming


def prefill_seconds(engine: LlamaEngine, tokens: list[int]) -> float:
    def run() -> float:
        assert engine.kv is not None and engine.llm is not None
        engine.kv.truncate(0)
        start = time.perf_counter()
        engine.llm.eval(tokens)
        elapsed = time.perf_counter() - start
        engine.kv.truncate(0)
        return elapsed

    return engine.call(run).result()


def set_callback(engine: LlamaEngine, kind: str) -> None:
    assert engine.llm is not None
    if kind == "strlen":
        engine.abort.install(engine.llm.ctx)
    elif kind == "none":
        null = ctypes.cast(None, llama_cpp.ggml_abort_callback)
        llama_cpp.llama_set_abort_callback(engine.llm.ctx, null, None)
    else:  # A Python callback, for comparison.
        engine.python_callback = llama_cpp.ggml_abort_callback(lambda data: False)  # type: ignore[attr-defined]
        llama_cpp.llama_set_abort_callback(engine.llm.ctx, engine.python_callback, None)  # type: ignore[attr-defined]


async def prefill_under_ui(engine: LlamaEngine, rounds: int) -> dict[str, float]:
    """Prefill 2,000 tokens while the UI streams 1,000 tokens/s into a message."""
    assert engine.llm is not None
    tokens = engine.llm.tokenize(text_of(2000).encode(), add_bos=True)
    results: dict[str, list[float]] = {"strlen": [], "none": [], "python": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ui.sqlite3")
        provider = PacedProvider(1000)
        app = ChatApp(Config(system_prompt=""), store, provider)
        async with app.run_test(size=(100, 40)) as pilot:
            app.screen.query_one("#composer").text = "stream"
            await pilot.press("enter")
            await provider.started.wait()
            for round_ in range(rounds):
                for kind in results:
                    if kind == "python" and round_:
                        continue  # Slow, and only for comparison: once is enough.
                    switch = engine.call(lambda k=kind: set_callback(engine, k))
                    await asyncio.to_thread(switch.result)
                    seconds = await asyncio.to_thread(prefill_seconds, engine, tokens)
                    results[kind].append(len(tokens) / seconds)
            app.chat.turn.cancel()
            await app.action_quit()
        store.close()
    engine.call(lambda: set_callback(engine, "strlen")).result()
    return {kind: percentile(values, 50) for kind, values in results.items()}


# Turn after a cancel, and reopening


async def turn(provider: LocalProvider, store: Store, conversation, prompt: str, stop_after=None):
    stopping = {"texts": 0}
    current: list[Turn] = []

    class StopAfter(QuietObserver):
        async def on_event(self, event: TurnEvent) -> None:
            if stop_after is not None and getattr(event.payload, "text", None):
                stopping["texts"] += 1
                if stopping["texts"] >= stop_after:
                    current[0].cancel()

    t = Turn(
        conversation=conversation,
        prompt=prompt,
        provider=provider,
        store=store,
        observer=StopAfter(),
        settings=TurnSettings(system_prompt=""),
    )
    current.append(t)
    outcome = await t.run()
    job = provider.last_job
    assert job is not None
    first = outcome.responses[-1].timings.time_to_first_token if outcome.responses else None
    return outcome, job, (first or 0.0) * 1000


async def reuse_after_cancel(model: Path, context: int, tmp: Path) -> dict[str, float]:
    store = Store(tmp / f"reuse{context}.sqlite3")
    warm = LocalProvider(config(model_path=str(model), max_tokens=32), state_dir=tmp / "kv")
    await warm.prepare()
    conversation = store.create_conversation()
    await turn(warm, store, conversation, "Read this: " + text_of(context))
    warm.config.max_tokens = 400
    await turn(warm, store, conversation, "Now write a long story.", stop_after=20)
    warm.config.max_tokens = 8
    _, warm_job, warm_ttft = await turn(warm, store, conversation, "Summarize it in a word.")
    await warm.close()  # Saves the conversation's KV state.

    cold = LocalProvider(config(model_path=str(model), max_tokens=8), state_dir=tmp / "none")
    await cold.prepare()
    copy = store.create_conversation()
    copy.items = store.load_conversation(conversation.id).items[:-2]  # The same history.
    _, cold_job, cold_ttft = await turn(cold, store, copy, "Summarize it in a word.")
    await cold.close()

    reopened = LocalProvider(config(model_path=str(model), max_tokens=8), state_dir=tmp / "kv")
    await reopened.prepare()
    again = store.load_conversation(conversation.id)
    _, reopen_job, reopen_ttft = await turn(reopened, store, again, "And in two words?")
    await reopened.close()
    reprocess = LocalProvider(config(model_path=str(model), max_tokens=8), state_dir=tmp / "x")
    await reprocess.prepare()
    again = store.load_conversation(conversation.id)
    again.items = again.items[:-2]
    _, reprocess_job, reprocess_ttft = await turn(reprocess, store, again, "And in two words?")
    await reprocess.close()
    store.close()
    return {
        "context_tokens": warm_job.prompt_tokens,
        "warm_evaluated": warm_job.prompt_evaluated,
        "warm_new_tokens": warm_job.prompt_tokens - warm_job.reused,
        "warm_ttft_ms": warm_ttft,
        "cold_evaluated": cold_job.prompt_evaluated,
        "cold_ttft_ms": cold_ttft,
        "ttft_ratio": cold_ttft / warm_ttft if warm_ttft else float("nan"),
        "reopen_evaluated": reopen_job.prompt_evaluated,
        "reopen_ttft_ms": reopen_ttft,
        "reprocess_evaluated": reprocess_job.prompt_evaluated,
        "reprocess_ttft_ms": reprocess_ttft,
    }


# Stop mid-reply, then Continue, against Retry and a cold context

STORY = "Now write a long story about the river."
ACTIONS = ("continue", "retry", "cold")


async def read_reply(
    provider: LocalProvider,
    messages: list[ChatMessage],
    *,
    continuing: bool = False,
    stop_after: int | None = None,
    rng: random.Random | None = None,
) -> dict:
    """Stream one request as the app reads it; Esc lands at a random moment after the
    `stop_after`-th text, and what arrives after it is dropped, as a turn drops it."""
    token = CancelToken()
    request = ModelRequest(messages, token, [], "bench", continuing=continuing)
    loop = asyncio.get_running_loop()
    texts: list[str] = []
    stamps: list[float] = []
    start = time.perf_counter()
    async with provider.stream(request) as events:
        async for event in events:
            if token.cancelled:
                break
            if isinstance(event, TextDelta):
                texts.append(event.text)
                stamps.append(time.perf_counter())
                if len(texts) == stop_after and rng is not None:
                    loop.call_later(rng.uniform(0.0, 0.04), token.cancel)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    job = provider.last_job
    assert job is not None
    return {
        "text": "".join(texts),
        "job": job,
        "ttft_ms": (stamps[0] - start) * 1000 if stamps else float("nan"),
        "step_ms": percentile(gaps, 50) * 1000 if gaps else float("nan"),
    }


async def continue_after_stop(model: Path, rounds: int, rng: random.Random) -> list[dict]:
    """Each round: a reply stopped at a random moment after about 30 tokens, then
    Continue (the partial as the last message), or Retry (the same prompt again), or
    the Continue's prompt in a cold context; the three take turns going first."""
    settings = config(model_path=str(model), max_tokens=32)
    warm = LocalProvider(settings, state_dir=None)
    cold = LocalProvider(config(model_path=str(model), max_tokens=8), state_dir=None)
    await warm.prepare()
    await cold.prepare()
    question = [ChatMessage("user", "Read this: " + text_of(1000))]
    first = await read_reply(warm, question)
    history = [*question, ChatMessage("assistant", first["text"]), ChatMessage("user", STORY)]
    engine = warm.engine
    assert engine is not None and engine.kv is not None
    base = len(engine.kv.committed)
    trials = []
    for round_ in range(rounds):
        for action in ACTIONS[round_ % 3 :] + ACTIONS[: round_ % 3]:
            engine.call(lambda: engine.kv.truncate(base)).result()  # The same start each time.
            warm.config.max_tokens = 400
            stopped = await read_reply(warm, history, stop_after=30, rng=rng)
            warm.config.max_tokens = 8
            partial = [*history, ChatMessage("assistant", stopped["text"])]
            if action == "continue":
                done = await read_reply(warm, partial, continuing=True)
            elif action == "retry":
                done = await read_reply(warm, history)
            else:
                cold_engine = cold.engine
                assert cold_engine is not None and cold_engine.kv is not None
                cold_engine.call(lambda e=cold_engine: e.kv.truncate(0)).result()
                done = await read_reply(cold, partial, continuing=True)
            job, stop_job = done["job"], stopped["job"]
            # The token whose decode the stop cut short was never evaluated: reading it
            # is not reading the partial again.
            unread = stop_job.stopped == "in decode" and job.ahead == 0
            trials.append(
                {
                    "action": action,
                    "stop": stop_job.stopped,
                    "prompt_tokens": job.prompt_tokens,
                    "reused": job.reused,
                    "evaluated_before_first": job.prompt_evaluated,
                    "partial_evaluated_again": job.prompt_evaluated - unread
                    if action == "continue"
                    else None,
                    "ahead": job.ahead,
                    "ttft_ms": done["ttft_ms"],
                    "step_ms": stopped["step_ms"],
                }
            )
    await warm.close()
    await cold.close()
    return trials


def print_continue(figures: dict) -> None:
    trials = figures["continue"]
    rows, summary = [], {}
    groups = {
        "continue, stopped in decode": ("continue", "in decode"),
        "continue, stopped between tokens": ("continue", "between tokens"),
        "continue, all": ("continue", None),
        "retry": ("retry", None),
        "cold": ("cold", None),
    }
    for group, (action, stop) in groups.items():
        mine = [t for t in trials if t["action"] == action and stop in (None, t["stop"])]
        if not mine:
            continue
        ttft = [t["ttft_ms"] for t in mine]
        steps = [t["ttft_ms"] / t["step_ms"] for t in mine]
        again = [
            t["partial_evaluated_again"] for t in mine if t["partial_evaluated_again"] is not None
        ]
        row = {
            "trials": len(mine),
            "stops_in_decode": sum(t["stop"] == "in decode" for t in mine),
            "prompt_tokens": round(percentile([t["prompt_tokens"] for t in mine], 50)),
            "evaluated_p50": percentile([t["evaluated_before_first"] for t in mine], 50),
            "evaluated_max": max(t["evaluated_before_first"] for t in mine),
            "partial_again_max": max(again) if again else None,
            "ahead_p50": percentile([t["ahead"] for t in mine], 50),
            "ttft_p50_ms": percentile(ttft, 50),
            "ttft_max_ms": max(ttft),
            "step_p50_ms": percentile([t["step_ms"] for t in mine], 50),
            "ttft_p50_steps": percentile(steps, 50),
            "ttft_max_steps": max(steps),
        }
        summary[group] = row
        rows.append([group, *("-" if v is None else v for v in row.values())])
    every = summary["continue, all"]
    met = every["partial_again_max"] == 0 and every["ttft_max_steps"] <= 2
    print_table(
        "Stop mid-reply, then Continue / Retry / a cold context, default model, 2 threads "
        f"(goal: Continue reads 0 tokens of the partial again, first token ≤ 2 decode steps: "
        f"{'met' if met else 'NOT met'})",
        ["after the stop", "trials", "in decode", "prompt", "evaluated p50", "max", "partial again",
         "ahead p50", "TTFT p50 ms", "max ms", "step ms", "TTFT p50 steps", "max steps"],
        rows,
    )  # fmt: skip
    figures["continue"] = {"summary": summary, "goal_met": met, "trials": trials}


async def shell_case(stops: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_model(Path(tmp) / "tiny.gguf")
        settings = config(
            model_path=str(tiny), tool_choice="required", chat_template=GEMMA_TEMPLATE
        )

        def provider_for(_root: Path) -> LocalProvider:
            return LocalProvider(settings, state_dir=None)

        return await shell_stops(provider_for, lambda _command: None, stops, grammar=True)


async def main_async(args) -> dict:
    figures: dict = {}
    if "shell" in args.parts:
        figures["shell"] = await shell_case(args.shell_stops)
    model = assemble_default_model(default_model_path(), lambda _: None)
    rng = random.Random(args.seed)
    if {"stops", "prefill"} & set(args.parts):
        engine = LlamaEngine(config(model_path=str(model)), model, None)
        engine.call(engine.load).result()
        if "stops" in args.parts:
            figures["stops"] = {
                phase: stop_latencies(engine, phase, args.stops, rng)
                for phase in ("prefill", "generation")
            }
        if "prefill" in args.parts:
            figures["prefill_tokens_per_s"] = await prefill_under_ui(engine, args.rounds)
        engine.close().result()
    if "reuse" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            figures["reuse"] = [await reuse_after_cancel(model, n, Path(tmp)) for n in (1000, 3000)]
    if "continue" in args.parts:
        figures["continue"] = await continue_after_stop(model, args.continue_rounds, rng)
    return figures


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--stops", type=int, default=50, help="stops per phase")
    p.add_argument("--rounds", type=int, default=3, help="prefill runs per callback kind")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shell-stops", type=int, default=50, help="stops while a shell tool runs")
    p.add_argument(
        "--continue-rounds", type=int, default=20, help="rounds of Continue, Retry and cold"
    )
    p.add_argument(
        "--parts",
        nargs="+",
        default=["stops", "prefill", "reuse", "continue", "shell"],
        help="what to measure",
    )
    args = p.parse_args()
    figures = asyncio.run(main_async(args))
    if "stops" in figures:
        print_stops(figures)
    if "prefill_tokens_per_s" in figures:
        print_prefill(figures)
    if "reuse" in figures:
        print_reuse(figures)
    if "continue" in figures:
        print_continue(figures)
    if "shell" in figures:
        print_shell(figures)
    write_json(args.json, {"benchmark": "local_cancel", **figures})
    return 0


def print_shell(figures: dict) -> None:
    values = figures["shell"]
    p99 = percentile(values, 99)
    print_table(
        f"Esc while a shell tool runs → its process group is gone (ms; goal p99 ≤ {GOAL_P99_MS:g})",
        ["provider", "stops", "p50", "p99", "max", "goal"],
        [["local", len(values), percentile(values, 50), p99, max(values),
          "met" if p99 <= GOAL_P99_MS else "NOT met"]],
    )  # fmt: skip
    figures["shell"] = {"p50_ms": percentile(values, 50), "p99_ms": p99, "all_ms": values}


def print_stops(figures: dict) -> None:
    stops = figures["stops"]
    print_table(
        "Esc → decode returned, default model, 2 threads (goal: p99 ≤ 10 ms)",
        ["phase", "stops", "p50 ms", "p99 ms", "max ms"],
        [
            [phase, len(v), percentile(v, 50), percentile(v, 99), max(v)]
            for phase, v in stops.items()
        ],
    )
    figures["stops"] = {
        phase: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "all_ms": v}
        for phase, v in stops.items()
    }


def print_prefill(figures: dict) -> None:
    pre = figures["prefill_tokens_per_s"]
    print_table(
        "Prefill tokens/s (2,000 tokens) while the UI streams 1,000 tokens/s (goal: ≥ 0.95)",
        ["abort callback", "tokens/s", "vs none"],
        [
            ["libc strlen (chatui)", pre["strlen"], pre["strlen"] / pre["none"]],
            ["none", pre["none"], 1.0],
            ["Python function", pre["python"], pre["python"] / pre["none"]],
        ],
    )


def print_reuse(figures: dict) -> None:
    print_table(
        "Turn after a cancel vs a cold context (goal: only new tokens; TTFT ratio ≥ 20× at 1,000)",
        [
            "context",
            "warm evaluated",
            "new tokens",
            "warm TTFT ms",
            "cold evaluated",
            "cold TTFT ms",
            "ratio",
        ],
        [
            [
                r["context_tokens"],
                r["warm_evaluated"],
                r["warm_new_tokens"],
                r["warm_ttft_ms"],
                r["cold_evaluated"],
                r["cold_ttft_ms"],
                r["ttft_ratio"],
            ]
            for r in figures["reuse"]
        ],
    )
    print_table(
        "Reopening a saved conversation: persisted KV state vs re-processing",
        ["context", "state evaluated", "state TTFT ms", "re-processed", "re-process TTFT ms"],
        [
            [
                r["context_tokens"],
                r["reopen_evaluated"],
                r["reopen_ttft_ms"],
                r["reprocess_evaluated"],
                r["reprocess_ttft_ms"],
            ]
            for r in figures["reuse"]
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
