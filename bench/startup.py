"""Launch → first frame, `chatui -p` → first byte, and the store at 0, 200,000 and 1,000,000 items.

    python -m bench.startup [--parts frame headless store] [--runs 10] [--warmup 1]
                            [--providers local openai anthropic] [--store-sizes 0 200000 1000000]
                            [--store-runs 5] [--cache DIR] [--no-cold]
                            [--root [LABEL=]PATH ...] [--json out.json]

**First frame** (`frame`). Each run starts one app, in a fresh process, on a
pseudo-terminal of 100x40 (`--sizes`; the harness of `terminal_escape.py`,
`_pty.PtyChild`), with its own temporary config, database (`--db` and
`CHATUI_DB`) and XDG directories (the default model's file is linked in, so
it is not assembled again). The clock starts just before the fork; the
first frame is the read of the output chunk after which the emulated screen
shows both the composer (a line holding its placeholder, "Message…") and a
status line (" NAME[ · MODEL] │ WORD"), that is, the bottom of chatui's chat
screen, which Textual draws in the same refresh as the rest. Until the raw
output holds the placeholder's bytes the harness only gathers the chunks;
pyte parses them afterwards (parsing as they arrive would take a core from
the app). 'ready' is the time until the status line reads `idle` (a local
model loaded; the floor is ready at once). Then the process group is
killed. Each case is first launched `--warmup` times untimed (byte code
written, files in the page cache). Cases, interleaved run by run (the order
rotates each round):

- `floor`: a bare Textual app drawing the same things with stock widgets
  (`_startup_floor.py`: a list, a `TextArea` with a "Message…" placeholder,
  a status line, a `Footer`), no chatui code;
- `local`: the `chatui` command on the local provider, the default model;
- `openai`, `anthropic`: the `chatui` command on each, with a dummy key and
  a `base_url` on 127.0.0.1 where a socket listens and never answers (no
  network; a first frame that waited for the server would never come).

Goal: each provider's first frame p50 within 1.2 times the floor's p50.

**Headless** (`headless`): `chatui -p PROMPT` with stdout a pipe, from the
launch to the first byte on stdout, and to the exit; against a wire server
on 127.0.0.1 for OpenAI and Anthropic (`tests/support/wire.py`, a short
reply) and the local provider on the tiny test GGUF (`tests/support/tiny_gguf.py`,
16 tokens). A tree without `chatui/headless.py` reports it as not available.

**The store** (`store`): stores of 0, 200,000 and 1,000,000 items (items ÷ 100
conversations, one of them 10,000 items long), built by `_store_bench.py`
(see there: realistic items through `chatui.messages.item_to_dict`) at
schema 6, then opened once with the tree's `Store` to bring them to its
schema. Both are cached under `--cache` (default /tmp/chatui-bench-stores),
the second keyed by the tree's schema version and a hash of its migrations.
Each run is one process that opens the store (`Store(path)`, timed), lists
200 conversations (`summaries`), searches two words (`search(word, limit=50)`,
if the tree has it), loads the long conversation (`load_conversation`) and
closes; a cold run first drops the store's files from the page cache
(`posix_fadvise`, no root needed), the warm run after it finds what the
cold one read. Goals: open ≤ 5 ms at every size (warm p50), search < 50 ms at
1,000,000 items (warm p50, each word).

`--root PATH` or `--root LABEL=PATH` (repeatable) runs another source tree
(a git worktree): its `chatui` comes first on the children's PYTHONPATH and
they run in it; with two or more, their runs interleave too (A/B in one run,
one floor). The floor app and the store's worker run as scripts from this
tree and import no `bench` code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import parser, percentile, print_goals, print_results, write_json
from bench._pty import ChildExited, PtyChild, child_env, log

HERE = Path(__file__).resolve().parent
FLOOR_APP = HERE / "_startup_floor.py"
STORE_BENCH = HERE / "_store_bench.py"
PROVIDERS = ("local", "openai", "anthropic")
PARTS = ("frame", "headless", "store")
PLACEHOLDER = "Message…"
PLACEHOLDER_BYTES = PLACEHOLDER[1:].encode()  # The cursor is drawn on its first letter.
STATUS = re.compile(r"^ (?!│)\S+(?: · [^│]*)? │ \S")  # Any status line, whatever its state.
DUMMY_KEY = "sk-bench-not-a-key-0000000000000000"
# Never passed on: the apps get their keys and servers from the temp config alone, and
# write their byte code on the warm-up runs, as an installed chatui has it (compiling
# chatui's modules at every launch cost more than 100 ms of the first frame).
DROPPED_ENV = (
    "PYTHONDONTWRITEBYTECODE",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "CHATUI_CONFIG",
    "CHATUI_DB",
)
FRAME_GOAL = 1.2  # Times the floor's p50.
OPEN_GOAL_MS = 5.0
SEARCH_GOAL_MS = 50.0
SEARCH_GOAL_ITEMS = 1_000_000
HEADLESS_PROMPT = "Say hello."
WIRE_REPLY = ("Hello", " from", " the", " wire.")


class NotReady(Exception):
    """The app drew its first frame but says it cannot work (its status reads `failed`)."""


@dataclass
class Tree:
    """A source tree under test: where it is, what it is called in the tables, what it has."""

    path: Path
    label: str
    chatui: str = ""
    store: dict[str, Any] = field(default_factory=dict)

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = child_env(str(self.path), extra)
        for name in DROPPED_ENV:
            env.pop(name, None)
        return env

    @property
    def headless(self) -> bool:
        return (self.path / "chatui" / "headless.py").exists()


def chatui_command() -> list[str]:
    """The `chatui` console script next to this Python, else `python -m chatui`."""
    script = Path(sys.executable).with_name("chatui")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chatui"]


def rounds(cases: list[Any], runs: int) -> Iterator[tuple[int, Any]]:
    """Each case once per round, `runs` rounds, the order rotated by one each round."""
    for n in range(runs):
        shift = n % len(cases)
        for case in cases[shift:] + cases[:shift]:
            yield n, case


def app_dirs(run_dir: Path) -> dict[str, str]:
    """XDG directories of the run's own, with the default model linked into its cache."""
    dirs = {name: run_dir / name.lower() for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME")}
    cache = dirs["XDG_CACHE_HOME"] = run_dir / "cache"
    real_models = Path.home() / ".cache" / "chatui" / "models"
    if env_cache := os.environ.get("XDG_CACHE_HOME"):
        real_models = Path(env_cache) / "chatui" / "models"
    (cache / "chatui").mkdir(parents=True)
    if real_models.is_dir():
        (cache / "chatui" / "models").symlink_to(real_models)
    return {k: str(v) for k, v in dirs.items()}


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are taken (by the kernel) and never answered."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]
    finally:
        listener.close()


def remote_config(provider: str, url: str) -> str:
    return f'provider = "{provider}"\n\n[{provider}]\napi_key = "{DUMMY_KEY}"\nbase_url = "{url}"\n'


# First frame


def frame_shown(child: PtyChild) -> bool | None:
    """Whether the screen shows the composer's placeholder and a status line."""
    rows = [child.row(y) for y in range(child.screen.lines)]
    composer = any(PLACEHOLDER in row for row in rows)
    return True if composer and any(STATUS.match(row) for row in rows) else None


def idle(child: PtyChild) -> str | None:
    """The status line's state once it says the app is ready (`idle`) or cannot be (`failed`)."""
    state = child.status()
    return state if state in ("idle", "failed") else None


def wait_first_frame(child: PtyChild, timeout: float) -> tuple[float, float | None]:
    """Read times of the chunks that completed the first frame and showed `idle` (if yet).

    Chunks are only gathered until the raw output holds the placeholder's
    bytes (but its first letter, where the cursor is drawn); then they are
    parsed in order, and the rest live.
    """
    deadline = time.perf_counter() + timeout
    gathered: list[tuple[float, bytes]] = []
    raw = bytearray()
    while True:
        try:
            stamp, data = child.chunks.get(timeout=max(deadline - time.perf_counter(), 0))
        except queue.Empty:
            raise TimeoutError from None
        gathered.append((stamp, data))
        start = max(len(raw) - len(PLACEHOLDER_BYTES), 0)
        raw += data
        if not data or PLACEHOLDER_BYTES in raw[start:]:
            break
    frame, ready = child.replay(gathered, [frame_shown, idle])
    if frame is None:
        frame = child.wait_for(frame_shown, deadline - time.perf_counter())
    return frame[0], None if ready is None or ready[1] != "idle" else ready[0]


def frame_run(case: tuple[str, Tree | None], size: tuple[int, int], tmp: Path) -> dict:
    name, tree = case
    run_dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{name}-"))
    figures: dict[str, Any] = {"case": name, "tree": tree.label if tree else "-"}
    with contextlib.ExitStack() as stack:
        if tree is None:
            argv, cwd = [sys.executable, str(FLOOR_APP)], str(HERE)
            env = child_env(str(HERE.parent), {})
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            config = run_dir / "config.toml"
            if name == "local":
                config.write_text('provider = "local"\n\n[local]\nn_threads = 2\n')
            else:
                port = stack.enter_context(silent_server())
                url = f"http://127.0.0.1:{port}" + ("/v1" if name == "openai" else "")
                config.write_text(remote_config(name, url))
            db = run_dir / "chatui.sqlite3"
            argv = [*chatui_command(), "--config", str(config), "--db", str(db)]
            cwd = str(tree.path)
            env = tree.env({**app_dirs(run_dir), "CHATUI_DB": str(db)})
        started = time.perf_counter()
        child = PtyChild(argv, size=size, env=env, cwd=cwd)
        try:
            frame, ready = wait_first_frame(child, 60)
            figures["frame_ms"] = (frame - started) * 1000
            if ready is None:
                ready, state = child.wait_for(idle, 30)
                if state != "idle":
                    raise NotReady(f"the status line reads {state!r}")
            figures["ready_ms"] = (ready - started) * 1000
        except (TimeoutError, ChildExited, NotReady) as problem:
            figures["error"] = f"{type(problem).__name__}: {problem}".rstrip(": ")
            figures["screen"] = child.text()
        finally:
            child.close(quit_keys=None)  # Killed: what comes after the first frame is not timed.
    shutil.rmtree(run_dir, ignore_errors=True)
    return figures


def frame_part(args: argparse.Namespace, trees: list[Tree], tmp: Path) -> list[dict]:
    cases: list[tuple[str, Tree | None]] = [("floor", None)]
    cases += [(provider, tree) for tree in trees for provider in args.providers]
    results = []
    for size in args.sizes:
        for _, case in rounds(cases, args.warmup):  # Byte code written, files cached: untimed.
            frame_run(case, size, tmp)
        runs: dict[tuple[str, str], list[dict]] = {}
        for n, (name, tree) in rounds(cases, args.runs):
            run = frame_run((name, tree), size, tmp)
            runs.setdefault((name, run["tree"]), []).append(run)
            if "error" in run:
                log(f"  {name} ({run['tree']}) run {n + 1}: {run['error']}\n{run['screen']}")
        size_text = f"{size[0]}x{size[1]}"
        floor_p50 = None
        for (name, label), done in runs.items():
            frames = [r["frame_ms"] for r in done if "frame_ms" in r]
            ready = [r["ready_ms"] for r in done if "ready_ms" in r]
            row = {
                "size": size_text,
                "case": name,
                "tree": label,
                "runs": len(frames),
                "failed": len(done) - len(ready),
                "frame_p50_ms": percentile(frames, 50),
                "frame_p90_ms": percentile(frames, 90),
                "frame_max_ms": max(frames, default=float("nan")),
                "ready_p50_ms": percentile(ready, 50),
                "ready_max_ms": max(ready, default=float("nan")),
                "frame_ms": [round(v, 2) for v in frames],
                "ready_ms": [round(v, 2) for v in ready],
            }
            if name == "floor":
                floor_p50 = row["frame_p50_ms"]
            results.append(row)
        for row in results:
            if row["size"] == size_text:
                row["floor_ratio"] = row["frame_p50_ms"] / floor_p50 if floor_p50 else None
    return results


# Headless


def headless_case(
    name: str, tree: Tree, tmp: Path, tiny_model: Path | None
) -> tuple[list[str], dict[str, str], Any]:
    """The command, its environment and the server (or None) for one headless run."""
    run_dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"p-{name}-"))
    config, db = run_dir / "config.toml", run_dir / "chatui.sqlite3"
    server = None
    if name == "local":
        assert tiny_model is not None
        config.write_text(
            f'provider = "local"\n\n[local]\nmodel_path = "{tiny_model}"\n'
            "max_tokens = 16\nn_threads = 2\n"
        )
    else:
        from tests.support import anthropic_wire, openai_wire
        from tests.support.wire import WireServer

        server = WireServer().__enter__()
        wire = openai_wire if name == "openai" else anthropic_wire
        server.play(wire.reply(*WIRE_REPLY))
        url = server.base_url + ("/v1" if name == "openai" else "")
        config.write_text(remote_config(name, url))
    argv = [*chatui_command(), "-p", HEADLESS_PROMPT, "--config", str(config), "--db", str(db)]
    env = tree.env({**app_dirs(run_dir), "CHATUI_DB": str(db)})
    return argv, env, server


def headless_run(
    case: tuple[str, Tree], tmp: Path, tiny_model: Path | None, timeout: float = 60
) -> dict:
    name, tree = case
    argv, env, server = headless_case(name, tree, tmp, tiny_model)
    figures: dict[str, Any] = {"case": name, "tree": tree.label}
    out, err = bytearray(), bytearray()
    try:
        started = time.perf_counter()
        child = subprocess.Popen(
            argv,
            cwd=tree.path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert child.stdout is not None and child.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ, out)
            selector.register(child.stderr, selectors.EVENT_READ, err)
            deadline = started + timeout
            while selector.get_map() and (left := deadline - time.perf_counter()) > 0:
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.data is out and not out:
                        figures["first_byte_ms"] = (time.perf_counter() - started) * 1000
                    key.data.extend(data)
        try:
            code = child.wait(max(deadline - time.perf_counter(), 0.1))
            figures["exit_ms"] = (time.perf_counter() - started) * 1000
            figures["exit_code"] = code
        except subprocess.TimeoutExpired:
            figures["error"] = f"still running after {timeout:.0f} s"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    text = out.decode(errors="replace")
    figures["replied"] = "".join(WIRE_REPLY) in text if server is not None else bool(text.strip())
    if figures.get("exit_code") or not figures["replied"]:
        figures.setdefault("error", f"exit code {figures.get('exit_code')}")
        figures["stderr"] = err.decode(errors="replace")[-600:]
    return figures


def headless_part(args: argparse.Namespace, trees: list[Tree], tmp: Path) -> list[dict]:
    results: list[dict] = []
    cases: list[tuple[str, Tree]] = []
    for tree in trees:
        if not tree.headless:
            log(f"headless: not available in {tree.label} (no chatui/headless.py)")
            results += [
                {"case": name, "tree": tree.label, "available": False}
                for name in args.headless_providers
            ]
            continue
        cases += [(name, tree) for name in args.headless_providers]
    if not cases:
        return results
    tiny_model = None
    if "local" in args.headless_providers:
        from tests.support.tiny_gguf import write_tiny_model

        tiny_model = write_tiny_model(tmp / "tiny.gguf", suppress_eog=True)
    for _, case in rounds(cases, args.warmup):
        headless_run(case, tmp, tiny_model)
    runs: dict[tuple[str, str], list[dict]] = {}
    for n, case in rounds(cases, args.runs):
        run = headless_run(case, tmp, tiny_model)
        runs.setdefault((case[0], case[1].label), []).append(run)
        if "error" in run:
            log(f"  -p {case[0]} ({case[1].label}) run {n + 1}: {run['error']}")
            log("  " + run.get("stderr", "").replace("\n", "\n  "))
    for (name, label), done in runs.items():
        good = [r for r in done if "error" not in r]
        first = [r["first_byte_ms"] for r in good]
        exits = [r["exit_ms"] for r in good]
        results.append(
            {
                "case": name,
                "tree": label,
                "available": True,
                "runs": len(good),
                "failed": len(done) - len(good),
                "first_byte_p50_ms": percentile(first, 50),
                "first_byte_p90_ms": percentile(first, 90),
                "first_byte_max_ms": max(first, default=float("nan")),
                "exit_p50_ms": percentile(exits, 50),
                "first_byte_ms": [round(v, 2) for v in first],
                "exit_ms": [round(v, 2) for v in exits],
            }
        )
    return results


# The store


def store_worker(tree: Tree, *arguments: str) -> dict:
    """Run `_store_bench.py` with `tree`'s chatui; its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(STORE_BENCH), *arguments],
        cwd="/",
        env=tree.env({}),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode:
        raise RuntimeError(f"_store_bench.py {arguments[0]} failed:\n{done.stderr[-2000:]}")
    if done.stderr.strip():
        log(done.stderr.rstrip())
    return json.loads(done.stdout.splitlines()[-1])


def conversations_for(items: int) -> tuple[int, int]:
    """(conversations, items of the long one) for a store of `items` items."""
    if items == 0:
        return 0, 0
    return max(items // 100, 1), min(10_000, items // 20)


def cached_store(tree: Tree, items: int, cache: Path) -> Path:
    """The store of `items` items at `tree`'s schema, built (and cached) if need be."""
    from bench._store_bench import BASE_SCHEMA, BUILD_VERSION

    cache.mkdir(parents=True, exist_ok=True)
    base = cache / f"base-s{BASE_SCHEMA}-b{BUILD_VERSION}-{items}.sqlite3"
    if not base.exists():
        conversations, long = conversations_for(items)
        log(f"store: building {items:,} items in {conversations:,} conversations → {base}")
        built = store_worker(
            tree,
            "build",
            "--out",
            str(base),
            "--items",
            str(items),
            "--conversations",
            str(conversations),
            "--long",
            str(long),
        )
        log(f"  built in {built['seconds']:.0f} s, {built['bytes'] / 1e6:,.0f} MB: {built}")
    info = tree.store
    key = f"v{info['schema']}-{info['migrations']}-b{BUILD_VERSION}-{items}"
    path = cache / f"{key}.sqlite3"
    if not path.exists():
        building = cache / f"{key}.building.sqlite3"
        shutil.copyfile(base, building)
        log(f"store: bringing {base.name} to schema {info['schema']} with {tree.label}'s Store")
        done = store_worker(tree, "migrate", "--db", str(building))
        log(f"  migrated in {done['seconds']:.1f} s")
        os.replace(building, path)
        for leftover in cache.glob(f"{key}.building.sqlite3*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return path


def store_part(args: argparse.Namespace, trees: list[Tree]) -> list[dict]:
    paths = {
        (tree.label, items): cached_store(tree, items, args.cache)
        for tree in trees
        for items in args.store_sizes
    }
    temperatures = ["warm"] if args.no_cold else ["cold", "warm"]
    cases = [(tree, items) for tree in trees for items in args.store_sizes]
    runs: dict[tuple[str, int, str], list[dict]] = {}
    for _, (tree, items) in rounds(cases, args.store_runs):
        for temperature in temperatures:  # The warm run finds what the cold one read.
            extra = ["--cold"] if temperature == "cold" else []
            path = paths[(tree.label, items)]
            run = store_worker(tree, "measure", "--db", str(path), *extra)
            runs.setdefault((tree.label, items, temperature), []).append(run)
    results = []
    for (label, items, temperature), done in sorted(
        runs.items(), key=lambda pair: (pair[0][0], pair[0][1], pair[0][2] != "warm")
    ):
        row: dict[str, Any] = {
            "tree": label,
            "items": items,
            "cache": temperature,
            "runs": len(done),
        }
        for figure in ("open_ms", "summaries_ms", "load_ms"):
            values = [r[figure] for r in done if figure in r]
            row[figure.replace("_ms", "_p50_ms")] = percentile(values, 50) if values else None
            row[figure.replace("_ms", "_max_ms")] = max(values) if values else None
            row[figure] = [round(v, 3) for v in values]
        row["load_items"] = done[0].get("load_items")
        row["search"] = {}
        for word in done[0].get("search", {}):
            values = [r["search"][word]["ms"] for r in done]
            row["search"][word] = {
                "p50_ms": percentile(values, 50),
                "max_ms": max(values),
                "hits": done[0]["search"][word]["hits"],
                "ms": [round(v, 3) for v in values],
            }
        results.append(row)
    return results


# Report


def goals(frame: list[dict], store: list[dict], trees: list[Tree]) -> list[dict]:
    checked = []
    many = len(trees) > 1
    for row in frame:
        if row["case"] == "floor":
            continue
        ratio = row.get("floor_ratio")
        tree = f" ({row['tree']})" if many else ""
        checked.append(
            {
                "size": row["size"],
                "goal": f"{row['case']}{tree}: first frame p50 ≤ {FRAME_GOAL} × floor",
                "value": ratio,
                "met": None if ratio is None or ratio != ratio else ratio <= FRAME_GOAL,
            }
        )
    width = max((len(f"{r['items']:,} items") for r in store), default=0)
    for row in store:
        if row["cache"] != "warm":
            continue
        size = f"{row['items']:,} items".rjust(width)
        tree = f" ({row['tree']})" if many else ""
        value = row["open_p50_ms"]
        checked.append(
            {
                "size": size,
                "goal": f"store open p50 ≤ {OPEN_GOAL_MS:.0f} ms{tree}",
                "value": value,
                "met": value <= OPEN_GOAL_MS,
            }
        )
        if row["items"] < SEARCH_GOAL_ITEMS:
            continue
        if not row["search"]:
            checked.append(
                {
                    "size": size,
                    "goal": f"search p50 < {SEARCH_GOAL_MS:.0f} ms{tree}: no Store.search",
                    "value": None,
                    "met": None,
                }
            )
        for word, figures in row["search"].items():
            checked.append(
                {
                    "size": size,
                    "goal": f"search {word!r} p50 < {SEARCH_GOAL_MS:.0f} ms{tree}",
                    "value": figures["p50_ms"],
                    "met": figures["p50_ms"] < SEARCH_GOAL_MS,
                }
            )
    return checked


def report(frame: list[dict], headless: list[dict], store: list[dict], checked: list[dict]) -> None:
    if frame:
        print_results(
            "Launch → first frame on the emulated screen (ms)",
            [
                ("terminal", "size"),
                ("case", "case"),
                ("tree", "tree"),
                ("runs", "runs"),
                ("p50", "frame_p50_ms"),
                ("p90", "frame_p90_ms"),
                ("max", "frame_max_ms"),
                ("÷ floor p50", "floor_ratio"),
                ("ready p50", "ready_p50_ms"),
                ("ready max", "ready_max_ms"),
                ("failed", "failed"),
            ],
            [{**r, "floor_ratio": r["floor_ratio"] or "-"} for r in frame],
        )
    if headless:
        rows = [r for r in headless if r["available"]]
        if rows:
            print_results(
                f"chatui -p {HEADLESS_PROMPT!r}: launch → first byte of the reply on stdout (ms)",
                [
                    ("provider", "case"),
                    ("tree", "tree"),
                    ("runs", "runs"),
                    ("p50", "first_byte_p50_ms"),
                    ("p90", "first_byte_p90_ms"),
                    ("max", "first_byte_max_ms"),
                    ("exit p50", "exit_p50_ms"),
                    ("failed", "failed"),
                ],
                rows,
            )
        for tree in dict.fromkeys(r["tree"] for r in headless if not r["available"]):
            print(f"chatui -p: not available in {tree} (no chatui/headless.py)\n")
    if store:
        words = list(dict.fromkeys(w for r in store for w in r["search"]))
        columns = [
            ("tree", "tree"),
            ("items", "items_text"),
            ("cache", "cache"),
            ("runs", "runs"),
            ("open p50", "open_p50_ms"),
            ("open max", "open_max_ms"),
            ("list 200 p50", "summaries_p50_ms"),
        ]
        columns += [(f"search {w!r} p50", f"search_{w}") for w in words]
        columns += [("load long p50", "load_p50_ms"), ("max", "load_max_ms"), ("loaded", "loaded")]
        rows = []
        for r in store:
            row = {**r, "items_text": f"{r['items']:,}", "loaded": r["load_items"] or "-"}
            for w in words:
                found = r["search"].get(w)
                row[f"search_{w}"] = f"{found['p50_ms']:.2f} ({found['hits']})" if found else "n/a"
            for key in ("open_p50_ms", "open_max_ms", "summaries_p50_ms", "load_p50_ms"):
                row[key] = "-" if row[key] is None else row[key]
            row["load_max_ms"] = "-" if row["load_max_ms"] is None else row["load_max_ms"]
            rows.append(row)
        print_results(
            "The store (ms; search: p50 (hits, at most 50); n/a: no Store.search)", columns, rows
        )
    if checked:
        print_goals(checked, max(len(g["goal"]) for g in checked))


def tree_info(path: Path, label: str) -> Tree:
    tree = Tree(path.resolve(), label)
    tree.store = store_worker(tree, "info")
    tree.chatui = tree.store["chatui"]
    if not tree.chatui.startswith(str(tree.path) + os.sep):
        raise SystemExit(f"{label}: chatui is imported from {tree.chatui}, not from {tree.path}")
    return tree


def labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(sizes=[(100, 40)])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--runs", type=int, default=10, help="launches per case (default 10)")
    p.add_argument(
        "--warmup", type=int, default=1, help="untimed launches per case first (default 1)"
    )
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    p.add_argument(
        "--headless-providers",
        nargs="+",
        choices=PROVIDERS,
        default=["openai", "anthropic", "local"],
    )
    p.add_argument(
        "--root",
        action="append",
        metavar="[LABEL=]PATH",
        help="source tree the apps run from (repeatable: interleaved; default: this repository)",
    )
    p.add_argument(
        "--store-sizes", type=int, nargs="+", default=[0, 200_000, 1_000_000], metavar="ITEMS"
    )
    p.add_argument("--store-runs", type=int, default=5, help="cold and warm runs per store size")
    p.add_argument("--cache", type=Path, default=Path("/tmp/chatui-bench-stores"))
    p.add_argument("--no-cold", action="store_true", help="store: warm runs only")
    args = p.parse_args()
    given = [root.partition("=") for root in args.root or []]
    roots = [Path(path if sep else label) for label, sep, path in given] or [HERE.parent]
    names = [
        label if sep else default
        for (label, sep, _), default in zip(given or [("", "", "")], labels(roots), strict=True)
    ]
    trees = [tree_info(path, name) for path, name in zip(roots, names, strict=True)]
    for tree in trees:
        log(f"{tree.label}: {tree.path} (chatui: {tree.chatui}, schema {tree.store['schema']})")
    sys.setswitchinterval(0.0005)  # The pty reader thread gets the GIL back at once.
    load_before = os.getloadavg()
    frame: list[dict] = []
    headless: list[dict] = []
    store: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        if "frame" in args.parts:
            frame = frame_part(args, trees, Path(tmp))
        if "headless" in args.parts:
            headless = headless_part(args, trees, Path(tmp))
    if "store" in args.parts:
        store = store_part(args, trees)
    load = [load_before, os.getloadavg()]
    checked = goals(frame, store, trees)
    report(frame, headless, store, checked)
    start, end = (" ".join(f"{value:.2f}" for value in values) for values in load)
    print(f"Load average (1, 5, 15 min) at the start: {start}; at the end: {end}.")
    print(f"{os.cpu_count()} cores. Trees: " + "; ".join(f"{t.label}: {t.path}" for t in trees))
    write_json(
        args.json,
        {
            "benchmark": "startup",
            "trees": [
                {"label": t.label, "path": str(t.path), "chatui": t.chatui, **t.store}
                for t in trees
            ],
            "frame": frame,
            "headless": headless,
            "store": store,
            "goals": checked,
            "loadavg": load,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
