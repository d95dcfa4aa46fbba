"""Stream rendering throughput into one message, and last-token-to-screen delay.

A provider emits N tokens as fast as the app takes them, then either ends the
reply or goes silent with the reply still open (a pause). The benchmark
measures the sustained rate (tokens / time from the first token emitted to the
Markdown widget having laid out the last token's text) and the delay from the
last token's emission to the end of the first screen refresh that includes
it. The text is prose in short paragraphs (with 1 and with 200 earlier
messages in the conversation), one long paragraph, or one long fenced code
block: a block's cost must not grow with its length. A last case streams a
tool call's long arguments in small deltas.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from itertools import islice
from pathlib import Path

from textual.await_complete import AwaitComplete
from textual.screen import Screen
from textual.widgets import Markdown

from bench._common import (
    PROSE,
    BenchProvider,
    parser,
    percentile,
    print_table,
    prose_tokens,
    write_json,
)
from chatui.app import ChatApp
from chatui.config import Config
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.providers.base import (
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.reply_markdown import ReplyMarkdown

refreshes: list[tuple[float, float]] = []  # (start, end) of each screen refresh
appends: list[tuple[float, int]] = []  # (time, source length) as each append completes
finishes: list[float] = []  # when each reply's finish() returned: its final text in place
argument_updates: list[float] = []  # when each tool-call arguments update returned
_refresh = Screen._compositor_refresh
# The reply's own widget class: whichever append it has (Textual's, or one of its own).
_append = ReplyMarkdown.append
_finish = AssistantMessage.finish
_update_tool_call = AssistantMessage.update_tool_call


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


async def _recording_finish(self: AssistantMessage) -> None:
    await _finish(self)
    finishes.append(time.perf_counter())


def _recording_update_tool_call(self: AssistantMessage, index: int) -> None:
    _update_tool_call(self, index)
    argument_updates.append(time.perf_counter())


Screen._compositor_refresh = _recording_refresh  # type: ignore[method-assign]
ReplyMarkdown.append = _recording_append  # type: ignore[method-assign]
AssistantMessage.finish = _recording_finish  # type: ignore[method-assign]
AssistantMessage.update_tool_call = _recording_update_tool_call  # type: ignore[method-assign]

CODE_TEXT = """\
def load(path: Path, limit: int = 100) -> list[str]:
    \"\"\"The first `limit` lines of `path`, without their endings.\"\"\"
    with path.open(encoding="utf-8") as file:
        lines = [line.rstrip("\\n") for line in islice(file, limit)]
    if not lines and limit > 0:
        raise ValueError(f"{path} is empty")
    return lines  # Callers may keep them.
"""
CODE = re.findall(r"\s*\S+", CODE_TEXT)


def shape_tokens(shape: str, count: int) -> list[str]:
    """`count` tokens of one shape: prose in short paragraphs, one paragraph, one code block."""
    if shape == "prose":
        return list(islice(prose_tokens(), count))
    if shape == "paragraph":
        return [f"{word} " for word in islice(itertools.cycle(PROSE), count)]
    body = list(islice(itertools.cycle(CODE), count - 2))
    return ["```python\n", *body, "\n```\n"]  # Opened and closed, like a model's.


class BurstProvider(BenchProvider):
    """Emits `tokens` as fast as they are taken, then ends or stays silent."""

    name = "burst"
    model = "bench"

    def __init__(self, tokens: list[str], ends: bool) -> None:
        self.tokens = tokens
        self.ends = ends
        self.first_at = self.last_at = 0.0
        self.done = asyncio.Event()

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


async def run(tokens: list[str], earlier: int, size: tuple[int, int], ends: bool) -> dict:
    count = len(tokens)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        conversation_id = seed_conversation(store, earlier - 1) if earlier > 1 else None
        provider = BurstProvider(tokens, ends)
        app = ChatApp(Config(system_prompt=""), store, provider)
        refreshes.clear()
        appends.clear()
        finishes.clear()
        async with app.run_test(size=size) as pilot:
            if conversation_id is not None:
                await app.open_conversation(conversation_id)
            app.screen.query_one("#composer").text = "Write at length."
            await pilot.press("enter")
            await provider.done.wait()
            length = len("".join(provider.tokens))
            in_widget = await _first(lambda: (t for t, n in appends if n >= length))
            shown_by = await _first(lambda: (r for r in refreshes if r[0] >= in_widget))
            if ends:  # The reply's final rendering, after its end, on screen.
                finished = await _first(lambda: iter(finishes))
                final = await _first(lambda: (r[1] for r in refreshes if r[0] >= finished))
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
        "last_token_to_final_screen_ms": (final - provider.last_at) * 1000 if ends else None,
    }


class ArgumentsProvider(BenchProvider):
    """Starts one tool call and streams its arguments in `count` deltas, then stays silent."""

    name = "burst"
    model = "bench"

    def __init__(self, count: int, chars: int) -> None:
        words = islice(itertools.cycle(PROSE), count * chars // 4 + 1)  # Enough of them.
        text = " ".join(words)[: count * chars]
        self.deltas = [text[n : n + chars] for n in range(0, len(text), chars)]
        self.first_at = self.last_at = 0.0
        self.done = asyncio.Event()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        yield ToolCallStart(0, "call_1", "write_note")
        yield ToolCallDelta(0, '{"text": "')
        self.first_at = time.perf_counter()
        for delta in self.deltas:
            yield ToolCallDelta(0, delta)
            self.last_at = time.perf_counter()
            # As a socket read does: the loop runs between deltas (without this the turn
            # would take every delta before the UI drew one, and the view would be drawn once).
            await asyncio.sleep(0)
        self.done.set()
        await asyncio.Event().wait()


async def run_arguments(count: int, chars: int, size: tuple[int, int]) -> dict:
    """Tool-call arguments streamed in `count` deltas of `chars` characters."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        provider = ArgumentsProvider(count, chars)
        app = ChatApp(Config(system_prompt=""), store, provider, tools=None)
        refreshes.clear()
        argument_updates.clear()
        async with app.run_test(size=size) as pilot:
            app.screen.query_one("#composer").text = "Write a long note."
            await pilot.press("enter")
            await provider.done.wait()
            view = app.screen.query(AssistantMessage).last()
            length = len(view.response.tool_calls[0].arguments)
            # Every delta, the opening one too, has been handed to the view.
            updated = await _first(lambda: islice(argument_updates, count, None))
            shown_by = await _first(lambda: (r for r in refreshes if r[0] >= updated))
            await app.chat.stop_and_wait()
            await app.action_quit()
        store.close()
    return {
        "deltas": count,
        "characters": length,
        "deltas_per_s": count / (shown_by[1] - provider.first_at),
        "last_delta_to_screen_ms": (shown_by[1] - provider.last_at) * 1000,
        "emit_deltas_per_s": count / (provider.last_at - provider.first_at),
    }


def prose_table(results: list[dict], repeat: int) -> None:
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
    print(f"Median (and max) of {repeat} runs, headless; prose with a paragraph break")
    print("every 60 tokens. 'reply ends': the stream ends after the last token, and the")
    print("end is drawn at once. 'stream pauses': it stays open and silent, and the last")
    print("text waits for the frame clock's next tick (Textual draws at most 60 frames/s).")
    print()


def block_table(results: list[dict], repeat: int) -> None:
    print_table(
        "One long block streamed into one message (goal: ≥ 2,500 tokens/s, like prose)",
        [
            "terminal",
            "block",
            "tokens",
            "KB",
            "tokens/s",
            "last token → screen ms",
            "→ final screen ms",
            "tokens/s (pauses)",
        ],
        [
            [
                r["size"],
                r["shape"],
                r["tokens"],
                r["kilobytes"],
                r["tokens_per_s_ends"],
                r["last_token_to_screen_ms_ends"],
                r["last_token_to_final_screen_ms"],
                r["tokens_per_s_pauses"],
            ]
            for r in results
        ],
    )
    print(f"Median of {repeat} runs, headless, 1 earlier message. 'paragraph': one paragraph")
    print("of prose, no line break; 'code': one fenced Python block, closed by the last token.")
    print("'→ final screen': from the last token until the reply's finished rendering (after")
    print("its stream ended) is on screen.")
    print()


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=5000, help="tokens of prose")
    p.add_argument("--block-tokens", type=int, default=4000, help="tokens of one long block")
    p.add_argument(
        "--shapes",
        nargs="+",
        choices=["prose", "paragraph", "code", "arguments"],
        default=["prose", "paragraph", "code", "arguments"],
        help="prose in short paragraphs, one long paragraph, one long code block, "
        "long tool-call arguments",
    )
    p.add_argument("--tool-deltas", type=int, default=8000)
    p.add_argument("--delta-chars", type=int, default=5, help="characters per arguments delta")
    p.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    args = p.parse_args()
    results = []
    cases = [
        (size, shape, earlier)
        for size in args.sizes
        for shape in args.shapes
        if shape != "arguments"
        for earlier in ((1, 200) if shape == "prose" else (1,))
    ]
    for size, shape, earlier in cases:
        tokens = shape_tokens(shape, args.tokens if shape == "prose" else args.block_tokens)
        case = {
            "size": f"{size[0]}x{size[1]}",
            "shape": shape,
            "earlier_messages": earlier,
            "kilobytes": len("".join(tokens).encode()) / 1000,
        }
        for ends, mode in ((True, "ends"), (False, "pauses")):
            runs = [asyncio.run(run(tokens, earlier, size, ends)) for _ in range(args.repeat)]
            delays = [r["last_token_to_screen_ms"] for r in runs]
            case[f"runs_{mode}"] = runs
            case[f"tokens_per_s_{mode}"] = percentile([r["tokens_per_s"] for r in runs], 50)
            case[f"last_token_to_screen_ms_{mode}"] = percentile(delays, 50)
            case[f"last_token_to_screen_max_ms_{mode}"] = max(delays)
            if ends:
                finals = [r["last_token_to_final_screen_ms"] for r in runs]
                case["last_token_to_final_screen_ms"] = percentile(finals, 50)
        case["tokens"] = len(tokens)
        results.append(case)
    prose = [r for r in results if r["shape"] == "prose"]
    blocks = [r for r in results if r["shape"] != "prose"]
    if prose:
        prose_table(prose, args.repeat)
    if blocks:
        block_table(blocks, args.repeat)
    arguments = []
    if "arguments" in args.shapes:
        for size in args.sizes:
            runs = [
                asyncio.run(run_arguments(args.tool_deltas, args.delta_chars, size))
                for _ in range(args.repeat)
            ]
            arguments.append(
                {
                    "size": f"{size[0]}x{size[1]}",
                    "deltas": args.tool_deltas,
                    "characters": runs[0]["characters"],
                    "runs": runs,
                    "deltas_per_s": percentile([r["deltas_per_s"] for r in runs], 50),
                    "last_delta_to_screen_ms": percentile(
                        [r["last_delta_to_screen_ms"] for r in runs], 50
                    ),
                }
            )
        print_table(
            "Tool-call arguments streamed in small deltas (goal: ≥ 2,500 deltas/s, linear)",
            ["terminal", "deltas", "characters", "deltas/s", "last delta → screen ms"],
            [
                [a[key] for key in ("size", "deltas", "characters", "deltas_per_s")]
                + [a["last_delta_to_screen_ms"]]
                for a in arguments
            ],
        )
        print(f"Median of {args.repeat} runs, headless. deltas/s: from the first delta emitted")
        print("to the end of the first screen refresh after the view took the last one.")
    write_json(
        args.json,
        {"benchmark": "render_throughput", "results": results, "tool_arguments": arguments},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
