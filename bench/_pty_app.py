"""The apps `terminal_escape.py` runs in a pseudo-terminal.

    python -m bench._pty_app scripted --db PATH [--rate N]
    python -m bench._pty_app floor [--rate N]
    python -m bench._pty_app chatui [--no-extra-bufts] -- CHATUI-ARGS...
    python -m bench._pty_app echo
    python -m bench._pty_app shell --db PATH
    python -m bench._pty_app mcp --db PATH --config PATH --record PATH

`scripted`: chatui's `ChatApp`, as the `chatui` command builds it (a Config,
a Store on `--db`), with `_common.PacedProvider` streaming prose at `--rate`
tokens/s for ever, until the reply is stopped.

`floor`: a bare Textual app, stock driver and stock bindings, no chatui code:
an anchored `VerticalScroll` with one `Markdown` widget per reply fed through
`MarkdownStream` at `--rate` tokens/s, and a one-line status (" floor │ idle",
"streaming", "stopped") that the harness reads like chatui's status bar.
Enter starts a reply, Esc (an App binding) stops it and writes "stopped",
Ctrl+N clears the replies.

`chatui`: the `chatui` command itself (`chatui.cli.main`, what the console
script runs). With `--no-extra-bufts`, llama.cpp's model parameters default to
`use_extra_bufts = false` first: a llama.cpp built for a CPU with AMX uses AMX
tiles to multiply repacked weights, which crashes (SIGSEGV at `ldtilecfg`) on
a machine that reports AMX but does not let a process use it.

`echo`: no Textual at all, the harness's own floor: a raw-mode loop that
writes a status line (" echo │ streaming │ 1 tok") for Enter and " echo │
stopped" the moment it reads a byte starting an Esc, Ctrl+N clears the
screen, Ctrl+Q quits.

`shell`: chatui's `ChatApp` with the real shell tool (workspace: a temp
dir), and a provider whose reply to a prompt is one call of it: the prompt
is a marker N, the command `sh -c 'sleep N & wait' & sleep N; wait` (a child
and a grandchild); its reply to the call's result is "Done.".

`mcp`: chatui's `ChatApp` with the config file `--config` (its
`[mcp.servers.NAME]` tables: the MCP servers, started as the app starts
them), and a provider whose reply to a prompt "TOOL SERVER N" is one call of
the tool `SERVER__TOOL`: `slow` with `{"seconds": 600}`, or `echo` with
`{"text": "answer SERVER N"}` (call id `TOOL-SERVER-N`); its reply to the
call's result is "The tool said: RESULT". It appends JSON lines to
`--record`, each with `time.time()` as `t`: `call` as the reply hands the
call over (`call_id`), `result` when the next request brings its result
(`call_id`, `content`), and `turn_cancel` (`t`: when `Turn.cancel` ran, that
is when the app took the Esc), written at the next request so that no file
is written on the stop's way. With `--trace`, also `trace` events (`at`: a
step of the MCP call's stop, see `trace_mcp_stop`).

Run from the root of the source tree under test (`terminal_escape.py` starts
it there, with that tree first on PYTHONPATH): chatui and `bench._common` are
imported from that tree, so A/B runs on git worktrees compare their own code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any


def run_scripted(rate: float, db: Path) -> None:
    from bench._common import PacedProvider
    from chatui.app import ChatApp
    from chatui.config import Config
    from chatui.store import Store

    store = Store(db)
    try:
        ChatApp(Config(system_prompt=""), store, PacedProvider(rate)).run()
    finally:
        store.close()


def run_shell_app(db: Path) -> None:
    import json
    import re
    import tempfile
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from chatui.app import ChatApp
    from chatui.config import Config, ToolsConfig
    from chatui.providers.base import (
        ModelRequest,
        StreamEnd,
        StreamEvent,
        TextDelta,
        ToolCallDelta,
        ToolCallEnd,
        ToolCallStart,
    )
    from chatui.store import Store
    from chatui.tools.builtin import build_registry

    class ShellCaller:
        name, model = "shell-caller", "bench"

        @asynccontextmanager
        async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
            async def events() -> AsyncIterator[StreamEvent]:
                last = request.messages[-1]
                if last.role == "user":
                    mark = re.sub(r"[^0-9.]", "", last.content.split("\n")[-1]) or "30"
                    command = f"sh -c 'sleep {mark} & wait' & sleep {mark}; wait"
                    yield ToolCallStart(0, "call_1", "shell")
                    yield ToolCallDelta(0, json.dumps({"command": command}))
                    yield ToolCallEnd(0)
                    yield StreamEnd("tool_calls")
                else:
                    yield TextDelta("Done.")
                    yield StreamEnd("stop")

            yield events()

    store = Store(db)
    try:
        with tempfile.TemporaryDirectory() as workspace:
            tools = build_registry(ToolsConfig(enabled=["shell"]), workspace=Path(workspace))
            ChatApp(Config(system_prompt=""), store, ShellCaller(), tools=tools).run()
    finally:
        store.close()


def trace_mcp_stop(stamps: list[object]) -> None:
    """Stamp (point, time.time()) at each step of an MCP call's stop, into `stamps`.

    `key`: the Esc's handler (`ChatScreen.action_stop`, also run by Ctrl+N)
    returned; `tool`: the turn's task got the stop (`McpTool.call` raised
    it); `call`: the call's task did (`McpServer.call`); `request`: the SDK's
    request task ended, its cancellation queued; `stdin`: a
    `notifications/cancelled` was written to a stdio server's pipe.
    Benchmark only: it wraps private methods.
    """
    import asyncio

    from chatui.mcp.server import McpServer
    from chatui.mcp.tools import McpTool
    from chatui.screens.chat import ChatScreen

    def stopped(point: str, method: Any) -> Any:
        async def traced(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except asyncio.CancelledError:
                stamps.append((point, time.time()))
                raise

        return traced

    action_stop = ChatScreen.action_stop

    def traced_action_stop(self: ChatScreen, key_time: float | None = None) -> None:
        action_stop(self, key_time)
        stamps.append(("key", time.time()))

    ChatScreen.action_stop = traced_action_stop  # type: ignore[method-assign]
    McpTool.call = stopped("tool", McpTool.call)  # type: ignore[method-assign]
    McpServer.call = stopped("call", McpServer.call)  # type: ignore[method-assign]
    McpServer._request = stopped("request", McpServer._request)  # type: ignore[method-assign]
    write = asyncio.StreamWriter.write

    def traced_write(self: asyncio.StreamWriter, data: Any) -> None:
        if b"notifications/cancelled" in data:
            stamps.append(("stdin", time.time()))
        write(self, data)

    asyncio.StreamWriter.write = traced_write  # type: ignore[method-assign]


def run_mcp_app(db: Path, config_path: Path, record: Path, trace: bool = False) -> None:
    import json
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from chatui.app import ChatApp
    from chatui.config import load_config
    from chatui.providers.base import (
        ModelRequest,
        StreamEnd,
        StreamEvent,
        TextDelta,
        ToolCallDelta,
        ToolCallEnd,
        ToolCallStart,
    )
    from chatui.store import Store
    from chatui.turn import Turn

    cancels: list[Any] = []  # time.time() of each Turn.cancel (and --trace's), not yet written.
    cancel = Turn.cancel

    def traced_cancel(self: Turn) -> bool:
        cancels.append(time.time())
        return cancel(self)

    Turn.cancel = traced_cancel  # type: ignore[method-assign]
    if trace:
        trace_mcp_stop(cancels)

    def note(ev: str, t: float | None = None, **fields: Any) -> None:
        line = {"ev": ev, **fields, "t": time.time() if t is None else t}
        with record.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")

    class McpCaller:
        name, model = "mcp-caller", "bench"

        @asynccontextmanager
        async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
            while cancels:
                stamp = cancels.pop(0)
                if isinstance(stamp, tuple):
                    note("trace", stamp[1], at=stamp[0])
                else:
                    note("turn_cancel", stamp)

            async def events() -> AsyncIterator[StreamEvent]:
                last = request.messages[-1]
                if last.role == "tool":
                    note("result", call_id=last.tool_call_id, content=last.content)
                    yield TextDelta(f"The tool said: {last.content}")
                    yield StreamEnd("stop")
                    return
                tool, server, n = [*last.content.split(), "", "", ""][:3]
                call_id = f"{tool}-{server}-{n}"
                if tool == "slow":
                    arguments: dict[str, Any] = {"seconds": 600}
                else:
                    arguments = {"text": f"answer {server} {n}"}
                yield ToolCallStart(0, call_id, f"{server}__{tool}")
                yield ToolCallDelta(0, json.dumps(arguments))
                yield ToolCallEnd(0)
                note("call", call_id=call_id)
                yield StreamEnd("tool_calls")

            yield events()

    config = load_config(config_path)
    store = Store(db)
    try:
        ChatApp(config, store, McpCaller()).run()
    finally:
        store.close()


def run_floor(rate: float) -> None:
    from markdown_it import MarkdownIt
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.widgets import Markdown, Static

    from bench._common import prose_tokens

    parser = MarkdownIt("gfm-like")

    class FloorApp(App[None]):
        CSS = """
        #messages { height: 1fr; padding: 0 1; }
        #messages Markdown { margin: 1 0 0 0; }
        #status { height: 1; }
        """
        BINDINGS = [
            Binding("escape", "stop", "Stop"),
            Binding("enter", "start", "Start"),
            Binding("ctrl+n", "clear", "New"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.stream_task: asyncio.Task[None] | None = None

        def compose(self) -> ComposeResult:
            yield VerticalScroll(id="messages")
            yield Static(" floor │ idle", id="status", markup=False)

        def show(self, state: str) -> None:
            self.query_one("#status", Static).update(f" floor │ {state}")

        async def action_start(self) -> None:
            if self.stream_task is not None and not self.stream_task.done():
                return
            messages = self.query_one("#messages", VerticalScroll)
            markdown = Markdown(parser_factory=lambda: parser)
            await messages.mount(markdown)
            messages.anchor()
            self.show("waiting")
            self.stream_task = asyncio.create_task(self._stream(Markdown.get_stream(markdown)))

        async def _stream(self, stream) -> None:  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                for n, token in enumerate(prose_tokens()):
                    delay = start + n / rate - time.perf_counter()
                    await asyncio.sleep(max(delay, 0))
                    await stream.write(token)
                    if n == 0:
                        self.show("streaming")
            finally:
                await stream.stop()

        def action_stop(self) -> None:
            if self.stream_task is not None and not self.stream_task.done():
                self.stream_task.cancel()
                self.show("stopped")

        async def action_clear(self) -> None:
            if self.stream_task is None or self.stream_task.done():
                await self.query_one("#messages", VerticalScroll).remove_children()

    FloorApp().run()


def run_chatui(argv: list[str], no_extra_bufts: bool) -> int:
    if no_extra_bufts:
        import llama_cpp.llama_cpp as low_level

        default_params = low_level.llama_model_default_params

        def without_extra_bufts():  # type: ignore[no-untyped-def]
            params = default_params()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = without_extra_bufts
    from chatui.cli import main as chatui_main

    return chatui_main(argv)


def run_echo() -> None:
    import os
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)

    def show(line: str) -> None:
        os.write(1, f"\x1b[H\x1b[2K echo │ {line}\r\n".encode())

    os.write(1, b"\x1b[2J")
    show("idle")
    try:
        while data := os.read(0, 1024):
            if data[:1] == b"\x1b":
                show("stopped")
            elif b"\r" in data:
                show("streaming │ 1 tok")
            elif b"\x0e" in data:
                os.write(1, b"\x1b[2J")
                show("idle")
            elif b"\x11" in data:
                break
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("app", choices=["scripted", "floor", "chatui", "echo", "shell", "mcp"])
    p.add_argument("--rate", type=float, default=1000.0, help="tokens/s (default 1000)")
    p.add_argument("--db", type=Path, help="the conversation database (scripted)")
    p.add_argument("--no-extra-bufts", action="store_true", help="chatui: see above")
    p.add_argument("--config", type=Path, help="mcp: the config file naming the MCP servers")
    p.add_argument("--record", type=Path, help="mcp: where the provider notes its calls")
    p.add_argument("--trace", action="store_true", help="mcp: stamp each step of a stop")
    argv = sys.argv[1:]
    rest = argv.index("--") if "--" in argv else len(argv)  # chatui's own arguments follow.
    args = p.parse_args(argv[:rest])
    if args.app == "chatui":
        return run_chatui(argv[rest + 1 :], args.no_extra_bufts)
    if args.app == "echo":
        run_echo()
    elif args.app == "mcp":
        if args.db is None or args.config is None or args.record is None:
            p.error("mcp needs --db, --config and --record")
        run_mcp_app(args.db, args.config, args.record, args.trace)
    elif args.app in ("scripted", "shell"):
        if args.db is None:
            p.error(f"{args.app} needs --db")
        if args.app == "shell":
            run_shell_app(args.db)
        else:
            run_scripted(args.rate, args.db)
    else:
        run_floor(args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
