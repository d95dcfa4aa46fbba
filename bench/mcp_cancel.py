"""Esc byte → the MCP server's handler sees the cancellation, end to end, over stdio and HTTP.

chatui runs as its own process on a pseudo-terminal (100x40, `--sizes`),
its screen parsed by pyte (`bench/_pty.py`), with a config naming two MCP
servers, both `python -m tests.support.mcp_servers standard` (the SDK's own
`MCPServer`): `stdio`, which chatui starts, and `http`, over Streamable HTTP
on 127.0.0.1, which this script starts. Neither asks before a call. The
provider (`bench/_pty_app.py mcp`) answers a prompt "slow SERVER N" with one
call of the server's `slow` tool, which runs until cancelled; the model side
is not what is measured.

Each stop: a new conversation (Ctrl+N), the prompt; once the server's record
(`CHATUI_TEST_RECORD`) shows the call's handler started, a random 20 to
200 ms more, then the Esc bytes are written to the terminal. Then, until the
output has been quiet for 250 ms, the harness only reads. The figures:

- **Esc → handler**: the server's `time.time()` when its handler saw the
  cancellation, minus the `time.time()` just before the Esc's `os.write`
  (the two processes read the same clock).
- **Esc → app**: until chatui's `Turn.cancel` ran (the app took the key),
  and **Esc → notification**: until the server's dispatcher got
  `notifications/cancelled` (stdio; none over HTTP when the 2026 protocol
  is spoken: the call's POST is aborted instead). They show where the time
  goes.
- **stop visible**: until the read of the output chunk after which the
  screen's status line reads `stopping` (or `stopped`); **cancel sent
  shown**: until the tool-call widget reads "cancel sent to SERVER".
- **next call**: then a prompt "echo SERVER N" makes the model call the same
  server's `echo`: the ms from the reply handing the call over to the next
  request bringing its result ('at server': until its handler started),
  and whether the result is the expected answer. Every call's record names
  the server's pid: one pid per server over the whole run means it survived
  every cancel.

Stops alternate between the servers (`--stops` each, 50 by default). Cases
(`--cases`): `kitty`, the Esc as `ESC [ 2 7 u` (kitty keyboard protocol: no
escape delay), and `lone`, a lone ESC byte (chatui waits `escape_delay_ms`,
10 ms, for more bytes). Goal (kitty): p99 Esc → handler ≤ 30 ms, and the
server answers the next call every time, as the same process.

`--trace` also stamps each step of the stop inside the app (the Esc's
handler returning, the turn's task, the call's task, the SDK's request, the
write to a stdio server's pipe; `_pty_app.trace_mcp_stop`), to find where
the time goes; it wraps private methods, so it is a diagnosis, not the
figure. `--root PATH` runs the app and its stdio server from another source
tree (a git worktree, for A/B runs; the HTTP server runs from this one);
`--env K=V` sets the app's environment; `--transcripts DIR` keeps the raw
terminal output. Every wait has a timeout; the app's process group and the
HTTP server's are killed at the end of each case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import parser, percentile, print_goals, print_results, write_json
from bench._pty import ChildExited, PtyChild, child_env, log
from bench.terminal_escape import KITTY_ESC, LONE_ESC, STOP_SEEN, catch_up, state_in
from tests.support.mcp import http_server
from tests.support.mcp_servers import RECORD_ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRANSPORTS = ("stdio", "http")
ESCS = {"kitty": KITTY_ESC, "lone": LONE_ESC}
CTRL_N = b"\x0e"
STARTUP_TIMEOUT = 60.0  # Seconds for the app's first screen, and for both servers to answer.
CALL_TIMEOUT = 30.0  # Seconds for a call to reach its server, or to be answered.
SLOW_SECONDS = 600  # The stopped call's length: it never ends on its own.
TRACE_POINTS = ("key", "tool", "call", "request", "stdin")  # See _pty_app.trace_mcp_stop.


class Abort(Exception):
    """The app or a server no longer responds: the rest of the case's stops are not run."""


class Tail:
    """The JSON lines appended to a file so far, read as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Read what was appended since the last poll; the new events."""
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        new = [json.loads(line) for line in lines if line.strip()]
        self.events += new
        return new

    def find(self, since: int = 0, **fields: Any) -> dict[str, Any] | None:
        """The first event from index `since` on whose fields have these values."""
        self.poll()
        for event in self.events[since:]:
            if all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    def wait(
        self, timeout: float, pump: Callable[[float], None], since: int = 0, **fields: Any
    ) -> dict[str, Any] | None:
        """`find`, until it finds (None past `timeout` s); `pump(s)` runs between two polls."""
        deadline = time.perf_counter() + timeout
        while (found := self.find(since, **fields)) is None:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            pump(min(0.002, left))
        return found


@dataclass
class Rig:
    """The app on its pty, and what the servers and the provider recorded."""

    child: PtyChild
    servers: dict[str, Tail]  # By server name (= transport).
    provider: Tail
    trace: bool = False
    pids: dict[str, set[int]] = field(default_factory=dict)

    def pump(self, seconds: float) -> None:
        """Let `seconds` pass, parsing the app's output (before an Esc, never after)."""
        self.child.drain(seconds)

    def idle(self, seconds: float) -> None:
        """Let `seconds` pass, only reading the app's output (it is parsed later)."""
        time.sleep(seconds)


def config_text(record_dir: Path, http_url: str, root: Path) -> str:
    """The app's config: the two servers, asking nothing, calls long enough not to time out."""
    stdio_record = json.dumps(str(record_dir / "stdio.jsonl"))
    return f"""\
system_prompt = ""

[tools]
enabled = []

[mcp.servers.stdio]
command = {json.dumps(sys.executable)}
args = ["-m", "tests.support.mcp_servers", "standard"]
env = {{ {RECORD_ENV} = {stdio_record} }}
cwd = {json.dumps(str(root))}
ask = false
timeout = {SLOW_SECONDS * 2}.0

[mcp.servers.http]
url = {json.dumps(http_url)}
ask = false
timeout = {SLOW_SECONDS * 2}.0
"""


def screen_clear(child: PtyChild) -> bool | None:
    """A new, empty conversation: no tool call of an earlier prompt on screen, status idle."""
    text = child.text()
    clear = "__slow" not in text and "__echo" not in text and child.status() == "idle"
    return True if clear else None


def new_conversation(rig: Rig) -> None:
    rig.child.write(CTRL_N)
    try:
        rig.child.wait_for(screen_clear, 30)
    except TimeoutError:
        raise Abort("Ctrl+N did not give an empty conversation") from None


def call(rig: Rig, tool: str, server: str, n: int | str) -> dict[str, Any] | None:
    """Type the prompt for one call of `tool`; the provider's `result` event once answered."""
    call_id = f"{tool}-{server}-{n}"
    rig.child.write(f"{tool} {server} {n}\r".encode())
    return rig.provider.wait(CALL_TIMEOUT, rig.pump, ev="result", call_id=call_id)


def turn_over(rig: Rig) -> None:
    try:
        rig.child.wait_for(state_in(("idle", "stopped", "failed")), CALL_TIMEOUT)
    except TimeoutError:
        raise Abort(f"the turn did not end (status {rig.child.status_line()!r})") from None


def warm_up(rig: Rig) -> None:
    """Call each server's `echo` until it answers (the servers start after the first frame)."""
    deadline = time.perf_counter() + STARTUP_TIMEOUT
    for server in TRANSPORTS:
        for attempt in range(1000):
            result = call(rig, "echo", server, f"warm{attempt}")
            if result is None:
                raise Abort(f"the provider never got the result of a warm-up call of {server}")
            turn_over(rig)
            if result["content"] == f"answer {server} warm{attempt}":
                break
            if time.perf_counter() > deadline:
                raise Abort(f"{server} did not answer within {STARTUP_TIMEOUT:.0f} s: {result}")
            rig.pump(0.25)


def stop_trial(rig: Rig, esc: bytes, server: str, n: int, rng: random.Random) -> dict[str, Any]:
    """One stop of `slow` on `server`, then one call of its `echo`: the trial's figures."""
    child, record = rig.child, rig.servers[server]
    new_conversation(rig)
    record.poll()
    rig.provider.poll()
    since, provider_since = len(record.events), len(rig.provider.events)
    child.write(f"slow {server} {n}\r".encode())
    start = record.wait(CALL_TIMEOUT, rig.pump, since, ev="start", tool="slow")
    if start is None:
        raise Abort(f"the call of slow never reached {server}; status {child.status_line()!r}")
    rig.pids.setdefault(server, set()).add(start["pid"])
    rid = start["rid"]
    delay = rng.uniform(0.020, 0.200)
    rig.pump(delay)
    catch_up(child)
    if child.status() != "running":
        raise Abort(f"the call is not running before the Esc: {child.status_line()!r}")

    wall = time.time()
    sent = child.write(esc)
    gathered = child.collect(quiet=0.25, limit=5)
    # The app's output is parsed only now, with the figures taken from the read times.
    shown = f"cancel sent to {server}"
    stop_check = state_in(STOP_SEEN)

    def note_check(child: PtyChild) -> bool | None:
        return True if shown in child.text() else None

    first_stop, first_note = child.replay(gathered, [stop_check, note_check])
    cancelled = record.wait(10, rig.idle, since, ev="handler_cancelled", rid=rid)
    notified = next(
        (
            event
            for event in record.events[since:]
            if event["ev"] == "notif"
            and event.get("method") == "notifications/cancelled"
            and str((event.get("params") or {}).get("requestId")) == rid
        ),
        None,
    )
    try:
        seen, _ = first_stop or child.wait_for(stop_check, 10)
    except TimeoutError:
        raise Abort(f"no stop on screen within 10 s; status {child.status_line()!r}") from None
    note_at: float | None = None
    with contextlib.suppress(TimeoutError):
        note_at, _ = first_note or child.wait_for(note_check, 15)
    turn_over(rig)

    answer = call(rig, "echo", server, n)
    turn_over(rig)
    echo_start = record.find(since, ev="start", tool="echo")
    if echo_start is not None:
        rig.pids[server].add(echo_start["pid"])
    handed = rig.provider.find(provider_since, ev="call", call_id=f"echo-{server}-{n}")
    took = next(
        (
            e
            for e in rig.provider.events[provider_since:]
            if e["ev"] == "turn_cancel" and e["t"] >= wall
        ),
        None,
    )
    steps = {}
    for event in rig.provider.events[provider_since:]:
        if event["ev"] == "trace" and event["at"] not in steps and event["t"] >= wall:
            steps[event["at"]] = (event["t"] - wall) * 1000
    return {
        "server": server,
        "rid": rid,
        **{f"trace_{point}_ms": steps.get(point) for point in TRACE_POINTS if rig.trace},
        "esc_after_start_ms": delay * 1000,
        "handler_ms": (cancelled["t"] - wall) * 1000 if cancelled else None,
        "notification_ms": (notified["t"] - wall) * 1000 if notified else None,
        "app_ms": (took["t"] - wall) * 1000 if took else None,
        "visible_ms": (seen - sent) * 1000,
        "note_ms": (note_at - sent) * 1000 if note_at is not None else None,
        "next_answered": bool(answer and answer["content"] == f"answer {server} {n}"),
        "next_ms": (answer["t"] - handed["t"]) * 1000 if answer and handed else None,
        "next_server_ms": (echo_start["t"] - handed["t"]) * 1000 if echo_start and handed else None,
        "next_result": answer["content"][:200] if answer else None,
    }


def interleaved(stops: int) -> Iterator[tuple[int, str]]:
    """(n, server): each server `stops` times, taking turns, each going first every other round."""
    for n in range(stops):
        order = TRANSPORTS if n % 2 == 0 else TRANSPORTS[::-1]
        for server in order:
            yield n, server


def run_case(name: str, args: argparse.Namespace, size: tuple[int, int], tmp: Path) -> dict:
    """One app process, one HTTP server: `args.stops` stops per server with the Esc of `name`."""
    rng = random.Random(f"{args.seed}-{name}-{size}")
    work = tmp / f"{name}-{size[0]}x{size[1]}"
    work.mkdir()
    trials: list[dict[str, Any]] = []
    tally: Counter[str] = Counter()
    error = None
    exit_code = None
    started = time.perf_counter()
    with http_server("standard", work / "http.jsonl", work / "http.stderr") as http:
        config = work / "config.toml"
        config.write_text(config_text(work, http.url, args.root))
        servers = {server: Tail(work / f"{server}.jsonl") for server in TRANSPORTS}
        provider = Tail(work / "provider.jsonl")
        argv = [
            sys.executable, "-m", "bench._pty_app", "mcp", "--db", str(work / "chat.sqlite3"),
            "--config", str(config), "--record", str(provider.path),
        ]  # fmt: skip
        if args.trace:
            argv.append("--trace")
        env = child_env(str(args.root), {"XDG_STATE_HOME": str(work / "state"), **args.env})
        log(f"{name} {size[0]}x{size[1]}: {' '.join(argv)}")
        transcript = None
        if args.transcripts:
            args.transcripts.mkdir(parents=True, exist_ok=True)
            transcript = str(args.transcripts / f"mcp-{name}-{size[0]}x{size[1]}.out")
        child = PtyChild(argv, size=size, env=env, cwd=str(args.root), transcript=transcript)
        rig = Rig(child, servers, provider, args.trace)
        try:
            try:
                child.wait_for(state_in(("idle",)), STARTUP_TIMEOUT)
            except TimeoutError:
                raise Abort(f"no idle status line within {STARTUP_TIMEOUT:.0f} s") from None
            warm_up(rig)
            log(f"  servers ready after {time.perf_counter() - started:.1f} s")
            for n, server in interleaved(args.stops):
                trial = stop_trial(rig, ESCS[name], server, n, rng)
                trials.append(trial)
                if trial["handler_ms"] is None:
                    tally[f"{server}_no_cancel"] += 1
                if not trial["next_answered"]:
                    tally[f"{server}_not_answered"] += 1
                    log(f"  {server} {n}: the next call got {trial['next_result']!r}")
                if len(trials) % 20 == 0:
                    log(f"  {name}: {len(trials)} stops")
        except (Abort, ChildExited, TimeoutError) as problem:
            error = (
                f"{type(problem).__name__}: {problem}" if str(problem) else type(problem).__name__
            )
            log(f"  {name}: stopped early: {error}")
            log("  screen:\n" + child.text())
        finally:
            exit_code = child.close()
        rig.pids.setdefault("http", set())
        http_pid = http.pid
    protocols = {server: protocol(work / "state", server) for server in TRANSPORTS}
    rows = [
        figures(name, size, server, [t for t in trials if t["server"] == server], rig, tally)
        for server in TRANSPORTS
    ]
    for row in rows:
        row["protocol"] = protocols[row["server"]]
        row["error"] = error
        row["exit_code"] = exit_code
        row["seconds"] = time.perf_counter() - started
        if row["server"] == "http":
            row["same_server"] = row["same_server"] and rig.pids["http"] <= {http_pid}
    return {"case": name, "rows": rows, "trials": trials}


def figures(
    case: str, size: tuple[int, int], server: str, trials: list[dict], rig: Rig, tally: Counter
) -> dict[str, Any]:
    def of(key: str) -> list[float]:
        return [t[key] for t in trials if t[key] is not None]

    handler, visible, note, nxt = of("handler_ms"), of("visible_ms"), of("note_ms"), of("next_ms")
    app, notified = of("app_ms"), of("notification_ms")
    pids = rig.pids.get(server, set())
    return {
        "case": case,
        "size": f"{size[0]}x{size[1]}",
        "server": server,
        "stops": len(trials),
        "handler_p50_ms": percentile(handler, 50),
        "handler_p90_ms": percentile(handler, 90),
        "handler_p99_ms": percentile(handler, 99),
        "handler_max_ms": max(handler, default=float("nan")),
        "no_cancel": tally[f"{server}_no_cancel"],
        "app_p50_ms": percentile(app, 50),
        "app_p99_ms": percentile(app, 99),
        "notification_p50_ms": percentile(notified, 50),
        "notification_p99_ms": percentile(notified, 99),
        "notifications": len(notified),
        "visible_p50_ms": percentile(visible, 50),
        "visible_p99_ms": percentile(visible, 99),
        "note_p50_ms": percentile(note, 50),
        "note_p99_ms": percentile(note, 99),
        "no_note": sum(t["note_ms"] is None for t in trials),
        "next_answered": f"{sum(t['next_answered'] for t in trials)}/{len(trials)}",
        "next_p50_ms": percentile(nxt, 50),
        "next_p99_ms": percentile(nxt, 99),
        "next_max_ms": max(nxt, default=float("nan")),
        "next_server_p50_ms": percentile(of("next_server_ms"), 50),
        "next_server_p99_ms": percentile(of("next_server_ms"), 99),
        **{
            f"trace_{point}_{q}_ms": percentile(of(f"trace_{point}_ms"), q)
            for point in TRACE_POINTS
            if rig.trace
            for q in (50, 99)
        },
        "server_pids": sorted(pids),
        "same_server": len(pids) == 1,
    }


def protocol(state: Path, server: str) -> str:
    """The protocol the app's log says it spoke with `server` (its last connection)."""
    spoken = "?"
    for path in state.rglob(f"{server}.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "protocol " in line:
                spoken = line.rsplit("protocol ", 1)[1].strip()
    return spoken


def goals(rows: list[dict]) -> list[dict]:
    checked = []
    for row in rows:
        if row["case"] != "kitty":
            continue
        value = row["handler_p99_ms"] if row["stops"] else None
        met = None if value is None else value <= 30.0
        goal = f"{row['server']}: Esc → handler p99 ≤ 30 ms"
        checked.append({"size": row["size"], "goal": goal, "value": value, "met": met})
    for row in rows:
        answered = row["stops"] > 0 and row["next_answered"] == f"{row['stops']}/{row['stops']}"
        good = answered and row["same_server"] and row["no_cancel"] == 0
        goal = f"{row['case']} {row['server']}: every cancel seen, next call answered, same server"
        checked.append({"size": row["size"], "goal": goal, "value": None, "met": good})
    return checked


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(sizes=[(100, 40)])
    p.add_argument("--stops", type=int, default=50, help="stops per server (default 50)")
    p.add_argument("--cases", nargs="+", choices=list(ESCS), default=list(ESCS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in the app's environment (repeatable)",
    )
    p.add_argument("--transcripts", type=Path, help="write each case's raw terminal output here")
    p.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="source tree the app and the servers run from (default: this repository)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="stamp each step of the stop inside the app (wraps private methods: a diagnosis)",
    )
    args = p.parse_args()
    args.env = parse_env(args.env)
    args.root = args.root.resolve()
    sys.setswitchinterval(0.0005)  # The pty reader thread gets the GIL back at once.
    cases = []
    with tempfile.TemporaryDirectory(prefix="mcp_cancel-") as tmp:
        for size in args.sizes:
            for name in args.cases:
                cases.append(run_case(name, args, size, Path(tmp)))
    rows = [row for case in cases for row in case["rows"]]
    print_results(
        "Esc byte written → the MCP server's handler sees the cancellation (ms)",
        [
            ("terminal", "size"),
            ("Esc", "case"),
            ("server", "server"),
            ("protocol", "protocol"),
            ("stops", "stops"),
            ("p50", "handler_p50_ms"),
            ("p90", "handler_p90_ms"),
            ("p99", "handler_p99_ms"),
            ("max", "handler_max_ms"),
            ("no cancel", "no_cancel"),
            ("next answered", "next_answered"),
            ("next p50", "next_p50_ms"),
            ("next p99", "next_p99_ms"),
            ("same server", "same_server"),
        ],
        rows,
    )
    print_results(
        "Where the time goes, and the screen (ms from the Esc; 'next: at server': from the call)",
        [
            ("Esc", "case"),
            ("server", "server"),
            ("app took it p50", "app_p50_ms"),
            ("p99", "app_p99_ms"),
            ("notification p50", "notification_p50_ms"),
            ("p99", "notification_p99_ms"),
            ("stop visible p50", "visible_p50_ms"),
            ("p99", "visible_p99_ms"),
            ("cancel sent shown p50", "note_p50_ms"),
            ("p99", "note_p99_ms"),
            ("not shown", "no_note"),
            ("next: at server p50", "next_server_p50_ms"),
            ("p99", "next_server_p99_ms"),
        ],
        rows,
    )
    if args.trace:
        print_results(
            "--trace: each step of the stop in the app (ms from the Esc byte, p50 / p99)",
            [("Esc", "case"), ("server", "server"), ("Turn.cancel", "app_p50_ms")]
            + [
                (f"{point} {q}", f"trace_{point}_{q}_ms")
                for point in TRACE_POINTS
                for q in (50, 99)
            ]
            + [("handler", "handler_p50_ms")],
            rows,
        )
    checked = goals(rows)
    print_goals(checked, 70)
    print("'next': ms from the reply handing the echo call over to its result reaching the")
    print("next request, for a call made once the stop was over; 'same server': one pid for")
    print("the server over every call of the case.")
    for case in cases:
        if case["rows"][0]["error"]:
            print(f"  {case['case']}: stopped early: {case['rows'][0]['error']}")
    write_json(
        args.json,
        {"benchmark": "mcp_cancel", "env": args.env, "results": rows, "goals": checked,
         "trials": {case["case"]: case["trials"] for case in cases}},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
