"""The store part of `startup.py`, run with the tree under test first on PYTHONPATH.

    python bench/_store_bench.py info
    python bench/_store_bench.py build --out PATH --items N --conversations C [--long L] [--seed S]
    python bench/_store_bench.py migrate --db PATH
    python bench/_store_bench.py measure --db PATH [--cold] [--query WORD ...]

Run as a script, by path, in a process of its own: it imports chatui's
`store` and `messages` from whichever tree PYTHONPATH names first (and
nothing from `bench`), so `startup.py --root` times another checkout's code.
Each command prints one JSON object on stdout.

`build` writes a store of N items in C conversations at schema 6 (the first
schema every tree under comparison knows), fast: the tree's own migration
scripts make the tables, then `executemany` fills them in one transaction.
The items are realistic: made as chatui's dataclasses and serialized by
`chatui.messages.item_to_dict`, prompts of a sentence or two, replies of a
few paragraphs (some with a code block or thinking), a tool call with its
result every eighth reply or so, a few replies interrupted or failed. The
words follow a Zipf law over 30,000 words. The search queries: "lighthouse",
one of them, at a rank that puts it in about 2.5% of the items, and
"zeppelin", in a sentence added to 0.03% of the replies. One conversation holds `--long`
items. `migrate` then opens the file once with the tree's `Store`, which
brings it to that tree's schema (and fills any index a migration adds).

`measure` is one launch's worth: `Store(path)` (timed), `summaries(limit=200)`,
`search(word, limit=50)` for each query (if the tree's Store has `search`),
`load_conversation` of the long conversation, each timed once, then `close`.
With `--cold`, the store's files are first dropped from the page cache
(`posix_fadvise(DONTNEED)` after an `fsync`: no root needed; it drops only
these files' clean pages).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import itertools
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

BASE_SCHEMA = 6
BUILD_VERSION = 1  # Bump when what `build` writes changes: the cache keys carry it.
LONG_KEY = "bench.long_conversation"  # Settings: the long conversation's id.
META_KEY = "bench.meta"  # Settings: what was built (JSON).
COMMON_QUERY, COMMON_RANK = "lighthouse", 250  # Its rank in the vocabulary: ~2.5% of items.
RARE_QUERY, RARE_SHARE = "zeppelin", 0.0003  # Outside it: that share of replies has it.
QUERIES = (COMMON_QUERY, RARE_QUERY)
RARE_SENTENCE = "A zeppelin drifted over the harbour."
VOCABULARY = 30_000
ZIPF = 1.07
COMMON_TEXT = (
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light kind "
    "off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn "
    "plant cover food sun four between state keep eye never last let thought city tree cross "
    "farm hard start might story saw far sea draw left late run while press close night real "
    "life few north open seem together next white children begin got walk example ease paper "
    "group always music those both mark often letter until mile river car feet care second "
    "book carry took science eat room friend began idea fish mountain stop once base hear "
    "horse cut sure watch color face wood main enough plain girl usual young ready above ever "
    "red list though feel talk bird soon body dog family direct pose leave song measure door"
)
COMMON = COMMON_TEXT.split()
ONSETS = "b c d f g h k l m n p r s t v w z br cl dr gr pl st tr"
CODE = (
    "```python\ndef read_config(path):\n    with open(path) as file:\n        return "
    "tomllib.loads(file.read())\n```",
    "```sh\ngrep -rn 'TODO' src/ | sort | uniq -c | sort -rn | head\n```",
    "```sql\nSELECT id, title FROM conversations ORDER BY updated DESC LIMIT 20;\n```",
    "```js\nconst total = items.reduce((sum, item) => sum + item.price * item.count, 0);\n```",
)
MODELS = (
    ("local", "gemma-3-270m (default)"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
)


def emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def info() -> dict[str, Any]:
    import chatui
    from chatui import store

    migrations = "\n".join(store.MIGRATIONS).encode()
    return {
        "chatui": chatui.__file__,
        "schema": store.SCHEMA_VERSION,
        "migrations": hashlib.sha256(migrations).hexdigest()[:10],
        "search": hasattr(store.Store, "search"),
    }


# Building


class Words:
    """Sentences drawn from a Zipf law over a fixed vocabulary (same seed, same text)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        words = list(dict.fromkeys(COMMON))
        onsets, vowels = ONSETS.split(), "aeiou"
        syllables = [o + v for o in onsets for v in vowels] + ["an", "el", "or", "is", "um"]
        known = set(words) | set(QUERIES)
        while len(words) < VOCABULARY - 1:
            word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
            if word not in known:
                known.add(word)
                words.append(word)
        words.insert(COMMON_RANK, COMMON_QUERY)
        self.words = words
        self.cumulative = list(itertools.accumulate(1 / (r + 1) ** ZIPF for r in range(len(words))))

    def sentence(self) -> str:
        total = self.cumulative[-1]
        chosen = [
            self.words[bisect.bisect(self.cumulative, self.rng.random() * total)]
            for _ in range(self.rng.randint(5, 18))
        ]
        return " ".join(chosen).capitalize() + self.rng.choice(".....!?")

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 7)))


class Texts:
    """Pools of prompts and paragraphs (a store repeats itself less than this, but is as big)."""

    def __init__(self, rng: random.Random, size: int = 6_000) -> None:
        words = Words(rng)
        self.rng = rng
        self.prompts = [
            " ".join(words.sentence() for _ in range(rng.randint(1, 2))) for _ in range(size // 2)
        ]
        self.paragraphs = [words.paragraph() for _ in range(size)]

    def prompt(self) -> str:
        return self.rng.choice(self.prompts)

    def reply(self) -> str:
        parts = [self.rng.choice(self.paragraphs) for _ in range(self.rng.randint(1, 4))]
        if self.rng.random() < 0.15:
            parts.insert(self.rng.randint(1, len(parts)), self.rng.choice(CODE))
        if self.rng.random() < RARE_SHARE:
            parts.append(RARE_SENTENCE)
        return "\n\n".join(parts)


def conversation_items(texts: Texts, count: int, model: tuple[str, str]) -> list[Any]:
    """`count` items of one conversation: prompts, replies, now and then a tool call."""
    from chatui.messages import (
        ModelResponse,
        ResponseState,
        TextPart,
        ThinkingPart,
        Timings,
        ToolCallPart,
        ToolResult,
        Usage,
        UserPrompt,
    )

    rng = texts.rng
    provider, name = model
    items: list[Any] = []
    clock = 1000.0

    def response(parts: list[Any], finish: str = "stop") -> ModelResponse:
        nonlocal clock
        state, error = ResponseState.COMPLETE, None
        roll = rng.random()
        if finish == "stop" and roll < 0.04:
            state, finish = ResponseState.INTERRUPTED, "cancelled"
        elif finish == "stop" and roll < 0.05:
            state, finish, error = ResponseState.FAILED, "error", "The server answered 503."
        tokens = sum(len(getattr(p, "text", "")) for p in parts) // 4 + 1
        clock += rng.uniform(5, 300)
        return ModelResponse(
            provider,
            name,
            parts=parts,
            state=state,
            finish_reason=finish,  # type: ignore[arg-type]
            error=error,
            usage=Usage(rng.randint(50, 4000), tokens),
            timings=Timings(
                clock, clock + 0.3, clock + 0.3 + tokens / 60, clock + 0.4 + tokens / 60
            ),
            received=tokens,
        )

    while len(items) < count:
        items.append(UserPrompt(texts.prompt()))
        parts: list[Any] = []
        if rng.random() < 0.1:
            parts.append(ThinkingPart(rng.choice(texts.paragraphs)))
        if rng.random() < 0.12 and count - len(items) >= 3:
            call = ToolCallPart(
                f"call_{rng.getrandbits(48):012x}",
                "read_file",
                json.dumps({"path": f"notes/{rng.choice(texts.prompts).split()[0].lower()}.md"}),
                complete=True,
            )
            items.append(
                response([*parts, TextPart("Let me look at the notes."), call], "tool_calls")
            )
            items.append(ToolResult(call.id, call.name, texts.reply()))
            parts = []
        parts.append(TextPart(texts.reply()))
        items.append(response(parts))
    return items[:count]


def build(out: Path, items: int, conversations: int, long: int, seed: int) -> dict[str, Any]:
    """A store of `items` items in `conversations` conversations, at schema 6, from nothing."""
    from chatui.messages import item_to_dict, new_id
    from chatui.store import MIGRATIONS

    if len(MIGRATIONS) < BASE_SCHEMA:
        raise SystemExit(f"this tree's store has schema {len(MIGRATIONS)}, below {BASE_SCHEMA}")
    started = time.perf_counter()
    rng = random.Random(seed)
    texts = Texts(rng)
    part = out.with_name(out.name + ".part")
    part.unlink(missing_ok=True)
    db = sqlite3.connect(part, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    for script in MIGRATIONS[:BASE_SCHEMA]:
        db.executescript(f"BEGIN; {script}; COMMIT;")
    db.execute(f"PRAGMA user_version = {BASE_SCHEMA}")
    sizes = _sizes(items, conversations, long)
    now = time.time()
    long_id = ""
    found = dict.fromkeys(QUERIES, 0)
    db.execute("BEGIN")
    for n, count in enumerate(sizes):
        conversation_id = new_id()
        if count == long and not long_id:
            long_id = conversation_id
        model = MODELS[n % len(MODELS)]
        made = conversation_items(texts, count, model)
        rows, parent, last = [], None, None
        for seq, item in enumerate(made, 1):
            data = json.dumps(item_to_dict(item))
            state = getattr(getattr(item, "state", None), "value", None)
            rows.append((item.id, conversation_id, seq, item.kind, state, data, parent))
            parent = item.id
            if item.kind == "response":
                last = (item.provider, item.model)
            for word in found:
                found[word] += word in data
        db.executemany(
            "INSERT INTO items (id, conversation_id, seq, kind, state, data, parent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        created = now - rng.uniform(0, 730 * 86400)
        updated = min(now, created + rng.uniform(60, 30 * 86400))
        title = " ".join(made[0].text.split()[:6])[:40] if made else "New conversation"
        db.execute(
            "INSERT INTO conversations (id, title, created, updated, leaf, last_provider,"
            " last_model) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, title, created, updated, parent, *(last or (None, None))),
        )
        if n % 500 == 499:
            print(f"  {sum(sizes[: n + 1]):,} items", file=sys.stderr, flush=True)
    meta = {
        "items": items,
        "conversations": len(sizes),
        "long_items": long if long_id else 0,
        "items_with": found,
        "build_version": BUILD_VERSION,
        "seed": seed,
    }
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (LONG_KEY, long_id))
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (META_KEY, json.dumps(meta)))
    db.execute("COMMIT")
    db.close()
    os.replace(part, out)
    meta["seconds"] = time.perf_counter() - started
    meta["bytes"] = out.stat().st_size
    return meta


def _sizes(items: int, conversations: int, long: int) -> list[int]:
    """Items per conversation: one of `long` (if it fits), the rest shared evenly."""
    if items == 0 or conversations == 0:
        return []
    long = long if conversations > 1 and items - long >= conversations - 1 else 0
    rest = conversations - 1 if long else conversations
    each, extra = divmod(items - long, rest)
    sizes = [each + (n < extra) for n in range(rest)]
    if long:
        sizes.insert(rest // 2, long)
    return sizes


def migrate(path: Path) -> dict[str, Any]:
    """Open the store once with this tree's `Store`: its migrations run, its indexes fill."""
    from chatui.store import Store

    started = time.perf_counter()
    store = Store(path)
    try:
        if hasattr(store, "search"):
            store.search("lighthouse", limit=1)  # Whatever it builds on its first search.
    finally:
        store.close()
    return {"seconds": time.perf_counter() - started}


# Measuring


def drop_from_page_cache(path: Path) -> None:
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            descriptor = os.open(name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def measure(path: Path, cold: bool, queries: list[str]) -> dict[str, Any]:
    from chatui.store import Store

    if cold:
        drop_from_page_cache(path)
    figures: dict[str, Any] = {}
    clock = time.perf_counter
    started = clock()
    store = Store(path)
    figures["open_ms"] = (clock() - started) * 1000
    try:
        started = clock()
        listed = store.summaries(limit=200)
        figures["summaries_ms"] = (clock() - started) * 1000
        figures["summaries"] = len(listed)
        search = getattr(store, "search", None)
        figures["search"] = {}
        for word in queries:
            if search is None:
                break
            started = clock()
            hits = search(word, limit=50)
            figures["search"][word] = {"ms": (clock() - started) * 1000, "hits": len(hits)}
        long_id = store.get_setting(LONG_KEY)
        if long_id:
            started = clock()
            conversation = store.load_conversation(long_id)
            figures["load_ms"] = (clock() - started) * 1000
            figures["load_items"] = len(conversation.items)
    finally:
        store.close()
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["info", "build", "migrate", "measure"])
    p.add_argument("--out", type=Path)
    p.add_argument("--db", type=Path)
    p.add_argument("--items", type=int, default=0)
    p.add_argument("--conversations", type=int, default=0)
    p.add_argument("--long", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=27)
    p.add_argument("--cold", action="store_true")
    p.add_argument("--query", action="append", default=[])
    args = p.parse_args()
    if args.command == "info":
        emit(info())
    elif args.command == "build":
        emit(build(args.out, args.items, args.conversations, args.long, args.seed))
    elif args.command == "migrate":
        emit(migrate(args.db))
    else:
        emit(measure(args.db, args.cold, args.query or list(QUERIES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
