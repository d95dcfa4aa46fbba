"""Esc byte → stop visible, end to end: the app in a pseudo-terminal, its screen parsed by pyte.

The app runs as its own process on a pseudo-terminal (100x40 by default,
`--sizes`); everything it draws is parsed by `pyte`, a terminal emulator. Each
trial starts a reply, waits until the screen shows its text streaming (the
status bar reads "streaming" with a token count above 0), waits a
random 20 to 300 ms more, then writes the Esc bytes to the terminal and times
from just before that `os.write` to the read of the first output chunk after
which the emulated screen shows the stop. A reader thread stamps each chunk
with `time.perf_counter()` as `os.read` returns it. From the Esc until the
output has been quiet for 250 ms the harness only reads; then it feeds the
chunks to pyte in order and checks the screen after each (pyte parsing as the
chunks arrive would take one of the machine's two cores from the app).

"Stop visible" is the status bar's state word turning to `stopping` (or
`stopped`): the status line is the bottom-most screen line that reads
" provider · model │ state …" (`_pty.STATUS_LINE`). It is the one sign that
is unique to this trial: the "■ interrupted" markers of earlier replies stay
on screen. chatui draws "stopping" in a frame of its own the moment the Esc
acts (`action_stop`, then `TurnView.show_stop`: `Phase.STOPPING`, then
`frame_clock.draw_widgets_now` for the status line), and the reply's marker and
last text in the full frame after it; "turn over" below waits for "stopped".
The floor app writes "stopped" into a status line of the same form.

Cases (`--cases`; each process runs all its trials, a new conversation every
20 trials):

- `scripted`: chatui's ChatApp with `_common.PacedProvider` at 1,000 tokens/s
  (`bench/_pty_app.py scripted`), Esc as a lone ESC byte. Textual's parser
  waits `ESCDELAY` ms (100 by default) for more bytes before it takes a lone
  ESC as the Esc key.
- `scripted-kitty`: the same, Esc as `ESC [ 2 7 u`, what a terminal with the
  kitty keyboard protocol sends: no escape delay.
- `scripted-ctrl-c` (not run by default): the same, stopped with Ctrl+C (byte
  0x03), which takes Esc's path: no escape delay either.
- `local`: the real `chatui` command, default local model, `n_threads = 2`
  (`--n-threads`), a
  temp config and temp database; a prompt asking for a long story; lone ESC.
  A reply that ends before the Esc lands is not a trial (counted as
  `ended_early`, and another reply is started).
- `floor`: a bare Textual app (stock driver and bindings) streaming Markdown at
  1,000 tokens/s, with an Esc binding that stops and writes "stopped"; lone ESC.
- `floor-kitty` (not run by default): the floor app with the kitty Esc.
- `echo` (not run by default): the harness's own floor, a raw-mode program
  with no Textual that writes "stopped" the moment it reads the Esc byte.
- `shell` (not run by default): Esc while a shell tool runs. chatui's app
  with the real shell tool (`bench/_pty_app.py shell`); each trial's prompt
  makes the reply call it with a command that starts a child and a
  grandchild (`sleep 30.N`, N new each trial). The harness approves the call
  (`y` in the dialog), waits until both are alive and the status reads
  "running tools", waits 20 to 300 ms more, writes a lone ESC, and times
  both the stop on screen and, polling `/proc`, the moment none of the
  group's processes is alive ("group gone").

Every wait has a timeout; a trial that times out is counted in `timeouts`,
not raised. `--root PATH` runs another source tree (a git worktree: it goes
first on the child's PYTHONPATH, and the child runs in it); `--env K=V` sets
the child's environment (e.g. `--env ESCDELAY=10`).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import parser, percentile, print_goals, print_results, write_json
from bench._pty import ChildExited, PtyChild, child_env, log
from tests.support.processes import alive, living, marker

HERE = Path(__file__).resolve().parent
LONE_ESC = b"\x1b"
KITTY_ESC = b"\x1b[27u"
CTRL_C = b"\x03"
CTRL_N = b"\x0e"
CASES = (
    "scripted",
    "scripted-kitty",
    "scripted-ctrl-c",
    "local",
    "floor",
    "floor-kitty",
    "echo",
    "shell",
)
DEFAULT_CASES = ("scripted", "scripted-kitty", "local", "floor")
NEW_CONVERSATION_EVERY = 20
LOCAL_PROMPT = "Write a very long story about a lighthouse keeper, in many chapters."
STOP_SEEN = ("stopping", "stopped")
TURN_OVER = ("stopped", "idle", "failed")


@dataclass
class Case:
    name: str
    argv: list[str]
    esc: bytes
    prompt: str  # Typed before Enter ("" for the floor app, which has no composer).
    startup_timeout: float
    stream_timeout: float
    notes: list[str] = field(default_factory=list)


class Abort(Exception):
    """The app no longer responds: the rest of the case's trials are not run."""


def build_case(name: str, tmp: Path, rate: int, no_extra_bufts: bool, n_threads: int = 2) -> Case:
    python = sys.executable
    launcher = [python, "-m", "bench._pty_app"]  # Run in `root`: its own code.
    kitty = name.endswith("-kitty")
    esc = KITTY_ESC if kitty else CTRL_C if name.endswith("-ctrl-c") else LONE_ESC
    if name.startswith("scripted"):
        db = tmp / f"{name}.sqlite3"
        argv = [*launcher, "scripted", "--db", str(db), "--rate", str(rate)]
        return Case(name, argv, esc, "trial {n}", 60, 30)
    if name == "echo":
        return Case(name, [*launcher, "echo"], LONE_ESC, "", 10, 10)
    if name == "shell":
        argv = [*launcher, "shell", "--db", str(tmp / "shell.sqlite3")]
        return Case(name, argv, LONE_ESC, "{marker}", 60, 30)
    if name.startswith("floor"):
        return Case(name, [*launcher, "floor", "--rate", str(rate)], esc, "", 60, 30)
    assert name == "local"
    config = tmp / "local.toml"
    config.write_text(f"[local]\nn_threads = {n_threads}\n")
    script = Path(python).with_name("chatui")
    command = [str(script)] if script.exists() else [python, "-m", "chatui"]
    if no_extra_bufts:  # chatui.cli.main, with llama.cpp's AMX path off (see _pty_app.py).
        command = [*launcher, "chatui", "--no-extra-bufts", "--"]
    argv = [*command, "--config", str(config), "--db", str(tmp / "local.sqlite3")]
    return Case(name, argv, LONE_ESC, "{n}. " + LOCAL_PROMPT, 900, 180)


def state_in(states: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def check(child: PtyChild) -> str | None:
        state = child.status()
        return state if state in states else None

    return check


def no_marker(child: PtyChild) -> bool | None:
    return True if "■ interrupted" not in child.text() else None


def catch_up(child: PtyChild) -> None:
    """Parse every chunk already read, so the screen is up to date."""
    while not child.chunks.empty():
        child.feed_one(0)


def start_reply(child: PtyChild, case: Case, n: int) -> None:
    """Type the prompt and Enter; return once the screen shows the reply streaming."""
    child.write(case.prompt.format(n=n).encode() + b"\r")
    try:
        child.wait_for(state_in(("waiting", "streaming")), 3)
    except TimeoutError:
        child.write(b"\r")  # The composer was still locked: the text is in it; send it now.
        child.wait_for(state_in(("waiting", "streaming")), 10)

    def text_or_end(child: PtyChild) -> str | None:
        if child.streaming_text():
            return "streaming"
        state = child.status()
        return state if state in TURN_OVER else None

    state = child.wait_for(text_or_end, case.stream_timeout)[1]
    if state != "streaming":
        raise Abort(f"the reply did not stream (status: {child.status_line()!r})")


def dialog_open(child: PtyChild) -> bool | None:
    return True if "Allow this tool call?" in child.text() else None


def shell_trial(child: PtyChild, case: Case, rng: random.Random, tally: Counter) -> dict:
    """Esc while the shell tool runs: the stop on screen, and the process group gone."""
    mark = marker()
    child.write(case.prompt.format(marker=mark).encode() + b"\r")
    child.wait_for(dialog_open, case.stream_timeout)
    child.write(b"y")
    deadline = time.perf_counter() + case.stream_timeout
    while len(pids := [p.pid for p in living(mark)]) < 2:
        if time.perf_counter() > deadline:
            raise Abort("the shell command's processes never started")
        child.drain(0.005)
    child.wait_for(state_in(("running",)), case.stream_timeout)
    child.drain(rng.uniform(0.020, 0.300))
    sent = child.write(case.esc)
    while any(alive(pid) for pid in pids):
        if time.perf_counter() - sent > 10:
            raise Abort("the shell command's processes outlived the stop by 10 s")
        time.sleep(0.0002)  # The reader thread keeps stamping the app's output meanwhile.
    gone = time.perf_counter()
    gathered = child.collect(quiet=0.25, limit=5)
    stop_check = state_in(STOP_SEEN)
    first_stop, first_over = child.replay(gathered, [stop_check, state_in(TURN_OVER)])
    try:
        seen, state = first_stop or child.wait_for(stop_check, 10)
        done, _ = first_over or child.wait_for(state_in(TURN_OVER), 30)
    except TimeoutError:
        tally["timeouts"] += 1
        raise Abort("no stop on screen within 10 s of the Esc") from None
    tally[f"first_seen_{state}"] += 1
    child.drain(0.05)
    return {
        "visible_ms": (seen - sent) * 1000,
        "turn_over_ms": (done - sent) * 1000,
        "group_gone_ms": (gone - sent) * 1000,
        "sent_at": sent,
    }


def one_trial(child: PtyChild, case: Case, n: int, rng: random.Random, tally: Counter) -> dict:
    """One Esc; the trial's figures, or {} when it is not a trial (the reply ended first)."""
    if case.name == "shell":
        return shell_trial(child, case, rng, tally)
    start_reply(child, case, n)
    delay = rng.uniform(0.020, 0.300)
    child.drain(delay)
    catch_up(child)
    if not child.streaming_text():
        tally["ended_early"] += 1
        try:
            child.wait_for(state_in(TURN_OVER), case.stream_timeout)
        except TimeoutError:  # Still going after all: stop it and go on.
            child.write(case.esc)
            child.wait_for(state_in(TURN_OVER), 30)
        return {}
    sent = child.write(case.esc)
    stop_check = state_in((*STOP_SEEN, "idle", "failed"))
    gathered = child.collect(quiet=0.25, limit=5)
    first_stop, first_over = child.replay(gathered, [stop_check, state_in(TURN_OVER)])
    try:
        seen, state = first_stop or child.wait_for(stop_check, 10)
    except TimeoutError:
        tally["timeouts"] += 1
        log(f"  {case.name}: trial {n}: no stop within 10 s; status {child.status_line()!r}")
        child.write(case.esc)
        try:
            child.wait_for(state_in(TURN_OVER), 20)
        except TimeoutError:
            raise Abort("the app did not stop after a second Esc") from None
        return {}
    if state == "idle":
        tally["ended_early"] += 1  # The reply ended on its own before the Esc landed.
        return {}
    if state == "failed":
        tally["failed"] += 1
        return {}
    tally[f"first_seen_{state}"] += 1
    try:
        done, _ = first_over or child.wait_for(state_in(TURN_OVER), 30)
    except TimeoutError:
        tally["timeouts"] += 1
        raise Abort("the turn did not end within 30 s of the stop") from None
    child.drain(0.05)
    return {
        "visible_ms": (seen - sent) * 1000,
        "turn_over_ms": (done - sent) * 1000,
        "esc_after_streaming_ms": delay * 1000,
        "sent_at": sent,
    }


def new_conversation(child: PtyChild) -> None:
    child.write(CTRL_N)
    try:
        child.wait_for(no_marker, 30)
    except TimeoutError:
        raise Abort("Ctrl+N did not clear the conversation") from None
    child.drain(0.1)


def run_case(case: Case, args: argparse.Namespace, size: tuple[int, int], env: dict) -> dict:
    rng = random.Random(f"{args.seed}-{case.name}-{size}")
    tally: Counter = Counter()
    trials: list[dict] = []
    transcript = None
    if args.transcripts:
        args.transcripts.mkdir(parents=True, exist_ok=True)
        transcript = str(args.transcripts / f"{case.name}-{size[0]}x{size[1]}.out")
    log(f"{case.name} {size[0]}x{size[1]}: {' '.join(case.argv)}")
    started = time.perf_counter()
    child = PtyChild(case.argv, size=size, env=env, cwd=str(args.root), transcript=transcript)
    error = None
    try:
        try:
            child.wait_for(state_in(("idle",)), case.startup_timeout)
        except TimeoutError:
            raise Abort(f"no idle status line within {case.startup_timeout:.0f} s") from None
        log(f"  ready after {time.perf_counter() - started:.1f} s")
        attempts = in_conversation = 0
        while len(trials) < args.trials and attempts < 3 * args.trials:
            attempts += 1
            if in_conversation == NEW_CONVERSATION_EVERY:
                new_conversation(child)
                in_conversation = 0
            in_conversation += 1
            result = one_trial(child, case, attempts, rng, tally)
            if result:
                trials.append(result)
                if len(trials) % 25 == 0:
                    log(f"  {case.name}: {len(trials)} trials")
    except (Abort, ChildExited, TimeoutError) as problem:
        error = f"{type(problem).__name__}: {problem}" if str(problem) else type(problem).__name__
        if isinstance(problem, TimeoutError):
            tally["timeouts"] += 1
        log(f"  {case.name}: stopped early: {error}")
        log("  screen:\n" + child.text())
    finally:
        exit_code = child.close()
    if error and exit_code:
        error += f" (exit code {exit_code})"
    visible = [t["visible_ms"] for t in trials]
    turn_over = [t["turn_over_ms"] for t in trials]
    gone = [t["group_gone_ms"] for t in trials if "group_gone_ms" in t]
    extra = {}
    if gone:
        extra = {
            "group_gone_p50_ms": percentile(gone, 50),
            "group_gone_p99_ms": percentile(gone, 99),
            "group_gone_ms": [round(v, 3) for v in gone],
        }
    return {
        "case": case.name,
        "size": f"{size[0]}x{size[1]}",
        "trials": len(trials),
        "p50_ms": percentile(visible, 50),
        "p90_ms": percentile(visible, 90),
        "p99_ms": percentile(visible, 99),
        "max_ms": max(visible) if visible else float("nan"),
        "turn_over_p50_ms": percentile(turn_over, 50),
        "turn_over_p99_ms": percentile(turn_over, 99),
        "timeouts": tally["timeouts"],
        "ended_early": tally["ended_early"],
        "failed": tally["failed"],
        "first_seen": {k[11:]: v for k, v in tally.items() if k.startswith("first_seen_")},
        "error": error,
        "exit_code": exit_code,
        "seconds": time.perf_counter() - started,
        "visible_ms": [round(v, 3) for v in visible],
        # perf_counter() is CLOCK_MONOTONIC on Linux, as is time.monotonic(): an
        # app-side trace lines up with these.
        "esc_sent_at": [t["sent_at"] for t in trials],
        **extra,
    }


GOALS = [
    # (case, figure, bound, text)
    ("scripted", "p50_ms", 25.0, "lone ESC scripted p50 ≤ 25 ms"),
    ("scripted", "p99_ms", 40.0, "lone ESC scripted p99 ≤ 40 ms"),
    ("scripted-kitty", "p99_ms", 20.0, "kitty p99 ≤ 20 ms"),
    ("local", "p50_ms", 30.0, "local p50 ≤ 30 ms"),
    ("local", "p99_ms", 50.0, "local p99 ≤ 50 ms"),
    ("shell", "group_gone_p99_ms", 50.0, "shell: group gone p99 ≤ 50 ms"),
]


def goals(results: list[dict]) -> list[dict]:
    checked = []
    for size in dict.fromkeys(r["size"] for r in results):
        rows = {r["case"]: r for r in results if r["size"] == size}
        for case, key, bound, text in GOALS:
            row = rows.get(case)
            value = row[key] if row and row["trials"] else None
            met = None if value is None else value <= bound
            checked.append({"size": size, "goal": text, "value": value, "met": met})
        floor, scripted = rows.get("floor"), rows.get("scripted")
        ratio = None
        if floor and scripted and floor["trials"] and scripted["trials"]:
            ratio = floor["p50_ms"] / scripted["p50_ms"]
        text = "floor p50 / scripted p50 ≥ 4"
        met = None if ratio is None else ratio >= 4
        checked.append({"size": size, "goal": text, "value": ratio, "met": met})
    return checked


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def which_chatui(root: Path, env: dict[str, str]) -> str:
    """Where the child's `import chatui` comes from (run from / like the console script)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import chatui; print(chatui.__file__)"],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip() or done.stderr.strip()[-200:]
    except (OSError, subprocess.SubprocessError) as error:
        return repr(error)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(sizes=[(100, 40)])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES))
    p.add_argument("--trials", type=int, default=100, help="Esc presses per case (default 100)")
    p.add_argument("--rate", type=int, default=1000, help="tokens/s of the scripted and floor apps")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--n-threads", type=int, default=2, help="local: the config's local.n_threads (default 2)"
    )
    p.add_argument(
        "--root",
        type=Path,
        default=HERE.parent,
        help="source tree the apps run from (default: this repository)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in the apps' environment (repeatable), e.g. ESCDELAY=10",
    )
    p.add_argument(
        "--no-extra-bufts",
        action="store_true",
        help="local: run chatui.cli.main with llama.cpp's use_extra_bufts off (a llama.cpp "
        "built with AMX crashes where the CPU reports AMX but the VM does not allow it)",
    )
    p.add_argument("--transcripts", type=Path, help="write each case's raw terminal output here")
    args = p.parse_args()
    args.root = args.root.resolve()
    extra = parse_env(args.env)
    env = child_env(str(args.root), extra)
    sys.setswitchinterval(0.0005)  # The reader thread gets the GIL back at once.
    origin = which_chatui(args.root, env)
    log(f"chatui from {origin}; child env: {extra or '{}'}")
    results = []
    with tempfile.TemporaryDirectory(prefix="terminal_escape-") as tmp:
        for size in args.sizes:
            for name in args.cases:
                case = build_case(name, Path(tmp), args.rate, args.no_extra_bufts, args.n_threads)
                results.append(run_case(case, args, size, env))
    for row in results:
        floor = next(
            (r for r in results if r["case"] == "floor" and r["size"] == row["size"]), None
        )
        row["floor_ratio"] = (
            floor["p50_ms"] / row["p50_ms"] if floor and floor["trials"] and row["trials"] else "-"
        )
    print_results(
        "Esc byte written → stop visible on the emulated screen (ms)",
        [
            ("terminal", "size"),
            ("case", "case"),
            ("trials", "trials"),
            ("p50", "p50_ms"),
            ("p90", "p90_ms"),
            ("p99", "p99_ms"),
            ("max", "max_ms"),
            ("floor p50 ÷ p50", "floor_ratio"),
            ("turn over p50", "turn_over_p50_ms"),
            ("timeouts", "timeouts"),
            ("ended early", "ended_early"),
        ],
        results,
    )
    shells = [r for r in results if "group_gone_p50_ms" in r]
    if shells:
        print_results(
            "Esc byte written → the shell tool's process group gone (ms)",
            [
                ("terminal", "size"),
                ("case", "case"),
                ("trials", "trials"),
                ("p50", "group_gone_p50_ms"),
                ("p99", "group_gone_p99_ms"),
            ],
            shells,
        )
    checked = goals(results)
    print_goals(checked, 32)
    print("'stop visible': the status bar's state reads 'stopping' (or 'stopped') on the")
    print("pyte screen; times from just before os.write of the Esc bytes to the read of the")
    print("chunk that made it so. 'turn over': until it reads 'stopped' (the turn has ended).")
    print(f"Apps run from {args.root} (chatui: {origin}).")
    for row in results:
        if row["error"]:
            print(f"  {row['case']}: stopped early: {row['error']}")
    write_json(
        args.json,
        {
            "benchmark": "terminal_escape",
            "root": str(args.root),
            "chatui": origin,
            "env": extra,
            "rate_tokens_per_s": args.rate,
            "results": results,
            "goals": checked,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
