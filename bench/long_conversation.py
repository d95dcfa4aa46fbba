"""A long local conversation on the default model: trims, prefix reuse, and cold prefills.

`Write a long story about a cat.` and follow-ups, cycling, for `--exchanges`
turns at the default config (Gemma 3 270M, n_ctx 4096, max_tokens 1024,
temperature 0.7, a fixed `--seed`), each a real `Turn` on a `LocalProvider`.
When a request would not fit the window with room for the reply, the turn
moves the model's view to a later prompt (`chatui/context.py`). Per turn:
its prompt tokens, those found in the KV cache (`reused`) and those
evaluated, the time to first token, the reply's tokens, and whether it
trimmed. For each trim turn, and every `--cold-every`-th turn, the same
request (same items, same view start, same prompt) is also sent to a second
provider whose cache is empty: its time to first token and tokens evaluated
are the cold prefill the warm turn is compared with.

Goals: no turn fails; no reply is cut short by the context; between trims a
turn evaluates only its new tokens (the previous prompt and reply are reused).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import parser, print_table, write_json
from chatui.config import Config, LocalConfig
from chatui.messages import Conversation, Item
from chatui.providers.local.llama_engine import GenerationJob
from chatui.providers.local.provider import (
    LocalProvider,
    assemble_default_model,
    default_model_path,
)
from chatui.store import Store
from chatui.turn import ContextFill, ContextTrimmed, TurnSettings
from tests.support.turns import make_turn

FIRST_PROMPT = "Write a long story about a cat."
FOLLOW_UPS = (
    "Go on.",
    "Tell it again from the dog's point of view.",
    "Go on.",
    "What happens to them next winter?",
    "Go on.",
    "Tell it again from the mouse's point of view.",
)


def prompts(n: int) -> list[str]:
    return [FIRST_PROMPT] + [FOLLOW_UPS[i % len(FOLLOW_UPS)] for i in range(n - 1)]


@dataclass
class Row:
    """One turn's figures (and, where measured, the cold prefill of its request)."""

    turn: int
    prompt: str
    state: str = ""
    error: str | None = None
    finish: str | None = None
    prompt_tokens: int = 0
    reused: int = 0
    prompt_evaluated: int = 0
    ttft_ms: float | None = None
    reply_tokens: int = 0
    trimmed: bool = False
    view_start_item: int | None = None  # Index of the first item the model sees.
    fill_tokens: int | None = None  # The ContextFill the turn reported.
    expected_reuse: int | None = None  # Previous prompt + previous reply in the cache.
    only_new: bool | None = None  # Evaluated only its new tokens (None: a trim or the first).
    seconds: float = 0.0
    cold_prompt_tokens: int | None = None
    cold_evaluated: int | None = None
    cold_ttft_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def settings_of(config: Config) -> TurnSettings:
    """The settings the app's session gives a turn for the default config."""
    return TurnSettings(
        system_prompt=config.system_prompt,
        interrupted_note=config.interrupted_note,
        idle_timeout=config.idle_timeout,
        max_steps=config.tools.max_steps,
    )


def new_job(provider: LocalProvider, before: GenerationJob | None) -> GenerationJob | None:
    job = provider.last_job
    return job if job is not None and job is not before else None


def in_cache(job: GenerationJob) -> int:
    """The tokens a completed job leaves committed: its prompt and the reply tokens evaluated.

    A reply that ended at its length limit never evaluated its last token; one
    that ended with end-of-turn evaluated all the tokens it kept.
    """
    reply = len(job.reply_tokens) - (1 if job.finish == "length" and job.reply_tokens else 0)
    return job.prompt_tokens + reply


async def cold_prefill(
    cold: LocalProvider,
    store: Store,
    items: list[Item],
    view_start: str | None,
    prompt: str,
    settings: TurnSettings,
) -> tuple[GenerationJob, float | None]:
    """The same request on an empty cache: stopped at its first piece of text."""
    engine = cold.engine
    assert engine is not None
    await asyncio.wrap_future(engine.call(lambda: engine.kv.truncate(0)))  # type: ignore[union-attr]
    conversation = store.create_conversation()
    conversation.items = list(items)  # In memory only: the turn stores just its own items.
    conversation.view_start = view_start
    before = cold.last_job
    turn, sink = make_turn(store, cold, conversation=conversation, settings=settings, prompt=prompt)
    sink.stop_after = 1
    outcome = await turn.run()
    job = new_job(cold, before)
    assert job is not None, f"the cold request was not sent: {outcome.error}"
    assert job.reused == 0, "the cold cache was not empty"
    ttft = outcome.responses[-1].timings.time_to_first_token if outcome.responses else None
    return job, None if ttft is None else ttft * 1000


async def run(args) -> dict:
    model = default_model_path()
    if not model.exists():
        print("assembling the default model ...", flush=True)
        assemble_default_model(model, lambda _message: None)
    defaults = Config()
    local = LocalConfig(
        model_path=str(model),
        n_ctx=args.n_ctx,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    settings = settings_of(defaults)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, cold_store = Store(Path(tmp) / "warm.sqlite3"), Store(Path(tmp) / "cold.sqlite3")
        warm = LocalProvider(local, state_dir=Path(tmp) / "kv")
        cold = LocalProvider(local, state_dir=None)
        await warm.prepare()
        await cold.prepare()
        conversation: Conversation = store.create_conversation()
        previous: GenerationJob | None = None
        print(
            f"{'turn':>4} {'state':>9} {'finish':>6} {'prompt':>6} {'reused':>6} {'eval':>5} "
            f"{'TTFT ms':>8} {'reply':>5} {'trim':>4} {'cold eval':>9} {'cold TTFT':>9} {'s':>5}",
            flush=True,
        )
        for n, prompt in enumerate(prompts(args.exchanges), start=1):
            row = Row(n, prompt)
            items_before = list(conversation.items)
            turn, sink = make_turn(
                store, warm, conversation=conversation, settings=settings, prompt=prompt
            )
            started = time.perf_counter()
            outcome = await turn.run()
            row.seconds = time.perf_counter() - started
            row.state = outcome.state.value
            row.error = outcome.error
            row.trimmed = any(isinstance(e.payload, ContextTrimmed) for e in sink.events)
            fills = [e.payload for e in sink.events if isinstance(e.payload, ContextFill)]
            row.fill_tokens = fills[-1].tokens if fills else None
            ids = [item.id for item in conversation.items]
            view = conversation.view_start
            row.view_start_item = ids.index(view) if view in ids else None
            job = new_job(warm, previous)
            if job is not None:
                row.finish = job.finish
                row.prompt_tokens, row.reused = job.prompt_tokens, job.reused
                row.prompt_evaluated = job.prompt_evaluated
                row.reply_tokens = len(job.reply_tokens)
                if job.prompt_evaluated != job.prompt_tokens - job.reused:
                    row.notes.append("evaluated ≠ prompt − reused")
                if row.fill_tokens is not None and row.fill_tokens != job.prompt_tokens:
                    row.notes.append(f"fill {row.fill_tokens} ≠ prompt")
                if previous is not None and not row.trimmed:
                    row.expected_reuse = in_cache(previous)
                    row.only_new = (
                        job.prompt_evaluated == job.prompt_tokens - job.reused
                        and job.reused == row.expected_reuse
                    )
                if job.finish == "length" and len(job.reply_tokens) < local.max_tokens:
                    row.notes.append("reply cut by the context")
                previous = job
            if outcome.responses:
                ttft = outcome.responses[-1].timings.time_to_first_token
                row.ttft_ms = None if ttft is None else ttft * 1000
            if job is not None and (row.trimmed or n % args.cold_every == 0 or n == 1):
                cold_job, cold_ttft = await cold_prefill(
                    cold, cold_store, items_before, conversation.view_start, prompt, settings
                )
                row.cold_prompt_tokens = cold_job.prompt_tokens
                row.cold_evaluated = cold_job.prompt_evaluated
                row.cold_ttft_ms = cold_ttft
                if cold_job.prompt_tokens != job.prompt_tokens:
                    row.notes.append(f"cold prompt {cold_job.prompt_tokens} tokens")
            rows.append(row)
            print(
                f"{n:>4} {row.state:>9} {row.finish or '-':>6} {row.prompt_tokens:>6} "
                f"{row.reused:>6} {row.prompt_evaluated:>5} {_ms(row.ttft_ms):>8} "
                f"{row.reply_tokens:>5} {'yes' if row.trimmed else '':>4} "
                f"{_opt(row.cold_evaluated):>9} {_ms(row.cold_ttft_ms):>9} {row.seconds:>5.1f}"
                + (f"  {'; '.join(row.notes)}" if row.notes else "")
                + (f"  error: {row.error}" if row.error else ""),
                flush=True,
            )
        await warm.close()
        await cold.close()
        store.close()
        cold_store.close()
    return {
        "benchmark": "long_conversation",
        "config": {
            "model": model.name,
            "n_ctx": local.n_ctx,
            "max_tokens": local.max_tokens,
            "temperature": local.temperature,
            "top_p": local.top_p,
            "top_k": local.top_k,
            "repeat_penalty": local.repeat_penalty,
            "n_batch": local.n_batch,
            "n_threads": local.n_threads,
            "seed": local.seed,
            "system_prompt": settings.system_prompt,
            "exchanges": args.exchanges,
        },
        "turns": [row.__dict__ for row in rows],
        "summary": summary(rows, local),
    }


def summary(rows: list[Row], local: LocalConfig) -> dict:
    checked = [r for r in rows if r.only_new is not None]
    warm_between = [r.ttft_ms for r in checked if r.ttft_ms is not None]
    trims = [r for r in rows if r.trimmed]
    paired = [r for r in rows if r.cold_ttft_ms and r.ttft_ms]
    return {
        "turns": len(rows),
        "failed": sum(r.state == "failed" for r in rows),
        "not_complete": [r.turn for r in rows if r.state != "complete"],
        "cut_by_context": [r.turn for r in rows if "reply cut by the context" in r.notes],
        "max_prompt_tokens": max((r.prompt_tokens for r in rows), default=0),
        "max_tokens": local.max_tokens,
        "n_ctx": local.n_ctx,
        "trims": [r.turn for r in trims],
        "between_trims_checked": len(checked),
        "between_trims_only_new": sum(bool(r.only_new) for r in checked),
        "between_trims_violations": [r.turn for r in checked if not r.only_new],
        "warm_between_trims_ttft_ms_median": _median(warm_between),
        "trim_turn_ttft_ms_median": _median([r.ttft_ms for r in trims if r.ttft_ms]),
        "trim_turn_cold_ttft_ms_median": _median([r.cold_ttft_ms for r in trims if r.cold_ttft_ms]),
        "cold_over_warm_ttft_non_trim_median": _median(
            [r.cold_ttft_ms / r.ttft_ms for r in paired if not r.trimmed and r.turn > 1]
        ),
    }


def print_report(figures: dict) -> None:
    rows = figures["turns"]
    print_table(
        "Long local conversation, default model "
        f"(n_ctx {figures['config']['n_ctx']}, max_tokens {figures['config']['max_tokens']}): "
        "warm turn vs cold prefill of the same request",
        ["turn", "prompt", "state", "prompt tok", "reused", "evaluated", "TTFT ms",
         "reply tok", "trim", "only new", "cold eval", "cold TTFT ms"],
        [
            [
                r["turn"],
                _short(r["prompt"]),
                r["state"] + ("" if r["finish"] in (None, "stop") else f" ({r['finish']})"),
                r["prompt_tokens"],
                r["reused"],
                r["prompt_evaluated"],
                _ms(r["ttft_ms"]),
                r["reply_tokens"],
                "TRIM" if r["trimmed"] else "",
                {True: "yes", False: "NO", None: ""}[r["only_new"]],
                _opt(r["cold_evaluated"]),
                _ms(r["cold_ttft_ms"]),
            ]
            for r in rows
        ],
    )  # fmt: skip
    s = figures["summary"]
    room = s["max_prompt_tokens"] + s["max_tokens"]
    print(f"turns failed: {s['failed']} of {s['turns']} (goal 0)")
    print(f"replies cut short by the context: {len(s['cut_by_context'])} (goal 0)")
    print(
        f"max prompt tokens + max_tokens: {s['max_prompt_tokens']} + {s['max_tokens']} = {room}"
        f" {'≤' if room <= s['n_ctx'] else '>'} n_ctx {s['n_ctx']}"
    )
    print(f"trims: {len(s['trims'])}, at turns {', '.join(map(str, s['trims'])) or '-'}")
    print(
        "between trims a turn evaluates only its new tokens "
        "(evaluated = prompt − reused, reused = previous prompt + previous reply): "
        f"{s['between_trims_only_new']} of {s['between_trims_checked']} turns"
        + (
            f"; not at turns {s['between_trims_violations']}"
            if s["between_trims_violations"]
            else ""
        )
    )
    print(
        f"TTFT median: between trims {_ms(s['warm_between_trims_ttft_ms_median'])} ms; "
        f"trim turns {_ms(s['trim_turn_ttft_ms_median'])} ms "
        f"(their cold prefill {_ms(s['trim_turn_cold_ttft_ms_median'])} ms); "
        f"cold ÷ warm on sampled non-trim turns {_x(s['cold_over_warm_ttft_non_trim_median'])}"
    )


def _median(values: list[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}×"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def main() -> int:
    defaults = LocalConfig()
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--exchanges", type=int, default=40, help="turns in the conversation")
    p.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="local.max_tokens")
    p.add_argument("--n-ctx", type=int, default=defaults.n_ctx, help="local.n_ctx")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (runs repeat)")
    p.add_argument(
        "--cold-every", type=int, default=5, help="also measure a cold prefill every N turns"
    )
    args = p.parse_args()
    figures = asyncio.run(run(args))
    print()
    print_report(figures)
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
