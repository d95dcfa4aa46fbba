"""Esc at every point of an MCP call, in the app, with each of the three providers.

The stop points of a built-in tool's call, with a real MCP server's tool:
while the call's arguments stream, while the approval dialog is open, while
the call runs on the server, between the last result and the next model
request; and one of MCP's own: while the server is still starting (a failed
server, started again by the model's next call of one of its tools, that
never finishes its handshake). OpenAI and Anthropic are the real SDKs
against the validating wire servers; local is real llama.cpp on the tiny
GGUF, whose calls a grammar writes (`tool_choice = "required"`), held to the
arguments the test pins (`Pinned`).

The servers are real processes (`tests/support/mcp_servers.py`) that record
what they get. A running call is the SDK's own `MCPServer`'s (`slow`), over
stdio and over Streamable HTTP; the other stop points use a raw JSON-RPC
server over stdio, which records every request it gets and starts in a few
milliseconds (the SDK's server takes a second or two to import). Each test
checks:

- what reached the server: no call cut off, refused, or stopped while its
  server was starting; for a running call, its handler saw the cancellation
  (over stdio, after `notifications/cancelled` with the call's request id);
- what is stored and shown (the call's status, "cancelled by the user",
  "cancel sent to" once the cancel went out, nothing of a late answer);
- that the server lives on: the same process, READY, answering a new call;
- that the next request is accepted (remote), or that the KV cache holds
  only committed tokens and is reused (local).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatui.app import ChatApp
from chatui.config import Config, McpConfig, McpServerConfig
from chatui.history import CANCELLED_TOOL_RESULT
from chatui.mcp.status import ServerState
from chatui.messages import ModelResponse, ToolResult, UserPrompt
from chatui.providers.base import ToolSpec
from chatui.screens.approval import ApprovalDialog
from chatui.screens.chat import ChatScreen
from chatui.store import Store
from chatui.tools.registry import RunnableTool, ToolRegistry
from chatui.widgets.status_bar import StatusBar
from chatui.widgets.tool_call import ToolCallView
from tests.support.app import screen_text, send, settled, wait_until
from tests.support.mcp import (
    ROOT,
    START_DEADLINE,
    HttpServer,
    Record,
    http_config,
    http_server,
    stdio_config,
)
from tests.support.mcp_servers import RECORD_ENV
from tests.support.stops import (
    KINDS,
    Rig,
    assert_cut_off,
    assert_stopped_on_screen,
    next_turn_is_accepted,
    statuses,
    stop_after_the_last_result,
    stop_while_arguments_stream,
    stored,
    views,
)

SIZE = (100, 40)


@pytest.fixture(params=KINDS)
def rig(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[Rig]:
    rig = Rig(request.param, tmp_path, tiny_model)
    yield rig
    rig.close()


@pytest.fixture
def record(tmp_path: Path) -> Record:
    return Record(tmp_path / "record.jsonl")


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers' logs go under the test's own state dir."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def mcp_app(store: Store, rig: Rig, server: McpServerConfig) -> ChatApp:
    """The app with `server` in its config and no other tool: the model sees the server's."""
    config = Config(system_prompt="", db_path=str(store.path), mcp=McpConfig({server.name: server}))
    return ChatApp(config, store, rig.provider, tools=ToolRegistry())


async def ready(pilot, app: ChatApp, name: str) -> Any:  # type: ignore[no-untyped-def]
    """Server `name`, once it is READY and its tools are in the registry."""
    await wait_until(pilot, lambda: app.mcp is not None, START_DEADLINE)
    assert app.mcp is not None
    server = app.mcp.servers[name]
    registry = app.session.tools
    await wait_until(
        pilot,
        lambda: server.status.state is ServerState.READY and f"{name}__echo" in registry,  # type: ignore[operator]
        START_DEADLINE,
    )
    return server


class Pinned:
    """An MCP tool offered with a schema that allows `arguments` alone.

    The local model's grammar then writes exactly them. The rest is the
    tool's own (`McpTool`): the check against the server's schema, approval,
    the server's and the tool's names, the call.
    """

    def __init__(self, tool: RunnableTool, arguments: dict[str, Any]) -> None:
        self.tool = tool
        self.name = tool.name
        schema = {
            "type": "object",
            "properties": {key: {"enum": [value]} for key, value in arguments.items()},
            "required": list(arguments),
            "additionalProperties": False,
        }
        self.spec = ToolSpec(tool.name, tool.spec.description, schema)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tool, name)


def offer(app: ChatApp, rig: Rig, name: str, pinned: dict[str, Any] | None = None) -> None:
    """Offer the model the tool `name` alone of its server's; for local, `pinned` arguments."""
    registry = app.session.tools
    assert isinstance(registry, ToolRegistry)
    tool = registry[name]
    if rig.local and pinned is not None:
        tool = Pinned(tool, pinned)
    registry.set_group(f"mcp:{name.split('__')[0]}", [tool])


def calls_made(app: ChatApp) -> int:
    """How many calls the (first) reply of the turn made."""
    return len(app.chat.turn_view.views[0].response.tool_calls)


def head(view: ToolCallView) -> str:
    """The call's status line, as shown."""
    return str(view._head.render())


async def echo(server: Any, text: str) -> str:
    """What server's `echo` answers to `text`: a call of the test's own, past the app's turn."""
    answer = await server.call("echo", {"text": text}, call_id="check", on_progress=lambda _: None)
    return "".join(block.text for block in answer.content)


def results(store: Store, app: ChatApp) -> list[ToolResult]:
    return [item for item in stored(store, app) if isinstance(item, ToolResult)]


async def quit_app(pilot, app: ChatApp) -> None:  # type: ignore[no-untyped-def]
    """Ctrl+Q, and wait until the app has closed its servers (so none outlives the test)."""
    await pilot.press("ctrl+q")
    assert app.mcp is not None
    servers = app.mcp.servers.values()
    await wait_until(pilot, lambda: all(s.status.state is ServerState.STOPPED for s in servers))


# 1. While a call's arguments stream


async def test_an_mcp_call_cut_off_by_esc_never_reaches_the_server(
    rig: Rig, store: Store, record: Record
) -> None:
    app = mcp_app(store, rig, stdio_config("srv", "late", record.path, ask=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, "srv")
        offer(app, rig, "srv__echo")
        shown = await stop_while_arguments_stream(rig, app, pilot, "srv__echo", "say something")

        assert_cut_off(store, app, shown)
        assert results(store, app) == []
        await next_turn_is_accepted(rig, app, pilot, store, kept=False)
        assert record.find("request", method="tools/call") == []  # Not then, not since.
        await quit_app(pilot, app)


# 2. While the approval dialog is open


async def test_one_esc_in_an_mcp_calls_approval_dialog_stops_the_turn_and_sends_nothing(
    rig: Rig, store: Store, record: Record
) -> None:
    app = mcp_app(store, rig, stdio_config("srv", "late", record.path))  # ask = true
    async with app.run_test(size=SIZE) as pilot:
        server = await ready(pilot, app, "srv")
        offer(app, rig, "srv__echo", {"text": "hi"})
        if not rig.local:
            rig.calls(("call_1", "srv__echo", ['{"text": "hi"}']))
        await send(pilot, "say hi")
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalDialog))
        assert "approval" in statuses(app)
        assert app.chat.query_one(StatusBar).state == "awaiting approval"

        await pilot.press("escape")  # Once.
        await wait_until(pilot, settled(app))

        assert isinstance(app.screen, ChatScreen)  # The dialog is gone.
        assert set(statuses(app)) == {"cancelled"}
        assert_stopped_on_screen(app)
        done = results(store, app)
        assert len(done) == calls_made(app) >= 1
        assert all(r.state == "cancelled" and r.content == CANCELLED_TOOL_RESULT for r in done)
        assert server.status.state is ServerState.READY
        if rig.server is not None:
            assert len(rig.server.requests) == 1
        await next_turn_is_accepted(rig, app, pilot, store)
        assert record.find("request", method="tools/call") == []
        assert record.find("notif", method="notifications/cancelled") == []
        await quit_app(pilot, app)


# 3. While the call runs on the server


@pytest.fixture
def standard_http(record: Record) -> Iterator[HttpServer]:
    with http_server("standard", record.path) as server:
        yield server


@pytest.fixture
def standard(request: pytest.FixtureRequest, record: Record) -> McpServerConfig:
    """The SDK's server, named "std", asking nothing, over the transport of the test's param."""
    if request.param == "stdio":
        return stdio_config("std", "standard", record.path, ask=False)
    return http_config("std", request.getfixturevalue("standard_http"), ask=False)


# Each provider over stdio; over HTTP, the remote ones (what the server sees does not
# depend on the provider, and they load no model).
RUNNING = [(kind, "stdio") for kind in KINDS] + [("openai", "http"), ("anthropic", "http")]


@pytest.mark.parametrize(("rig", "standard"), RUNNING, indirect=True)
async def test_esc_while_an_mcp_call_runs_cancels_it_on_the_server_which_answers_the_next_call(
    rig: Rig, standard: McpServerConfig, store: Store, record: Record
) -> None:
    app = mcp_app(store, rig, standard)
    async with app.run_test(size=SIZE) as pilot:
        server = await ready(pilot, app, "std")
        pid = server.pid
        offer(app, rig, "std__slow", {"seconds": 30})
        if not rig.local:
            rig.calls(("call_1", "std__slow", ['{"seconds": 30}']))
        await send(pilot, "sleep")
        await wait_until(pilot, lambda: bool(views(app)) and "running" in statuses(app))
        count = calls_made(app)
        await record.until(lambda: len(record.find("start", tool="slow")) == count)
        bars = [view.progress_line for view in views(app)]
        await wait_until(pilot, lambda: all(bar.progress is not None for bar in bars))
        assert statuses(app) == ["running"] * count

        pressed = time.time()  # The servers' clock.
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        at_stop = [bar.progress for bar in bars]

        assert_stopped_on_screen(app)
        assert statuses(app) == ["cancelled"] * count
        done = results(store, app)
        assert len(done) == count
        assert all(r.state == "cancelled" and r.content == CANCELLED_TOOL_RESULT for r in done)
        for started in record.find("start", tool="slow"):
            rid = started["rid"]
            (seen,) = await record.until(lambda rid=rid: record.find("handler_cancelled", rid=rid))
            assert seen["t"] >= pressed and seen["pid"] == started["pid"]
            if standard.transport == "stdio":
                assert record.cancelled(rid)  # notifications/cancelled, with the call's id.
            else:  # The 2026 protocol: the call's POST was aborted, which cancels it.
                assert record.cancelled(rid) == []
        for view in views(app):
            await wait_until(pilot, lambda view=view: "cancel sent to std" in head(view))
        assert "cancelled by you · cancel sent to std" in screen_text(app)
        assert record.find("done", tool="slow") == []

        # The server lives on, and answers.
        assert server.status.state is ServerState.READY
        assert server.pid == pid  # For stdio, the same process; over HTTP, no process of ours.
        assert await echo(server, "after") == "after"
        (echoed,) = record.find("start", tool="echo")
        assert {e["pid"] for e in record.find("start")} == {echoed["pid"]}  # The same process.
        assert [bar.progress for bar in bars] == at_stop  # No report after the stop moved it.
        await next_turn_is_accepted(rig, app, pilot, store)
        assert len(record.find("start", tool="slow")) == count  # Never run again.
        await quit_app(pilot, app)


# 4. Between the last result and the next request


async def test_a_stop_after_the_last_mcp_result_sends_nothing_more(
    rig: Rig, store: Store, record: Record
) -> None:
    app = mcp_app(store, rig, stdio_config("srv", "late", record.path, ask=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app, "srv")
        offer(app, rig, "srv__echo", {"text": "hi"})
        if not rig.local:
            hi = ['{"text": "hi"}']
            rig.calls(("call_1", "srv__echo", hi), ("call_2", "srv__echo", hi))
        jobs, requests_before = await stop_after_the_last_result(rig, app, pilot, "say hi")

        assert_stopped_on_screen(app)
        assert set(statuses(app)) == {"done"}
        count = calls_made(app)
        items = stored(store, app)
        assert (
            count >= 1
            and [type(i) for i in items] == [UserPrompt, ModelResponse] + [ToolResult] * count
        )
        assert [(r.state, r.content) for r in results(store, app)] == [("ok", "hi")] * count
        if rig.local:
            assert len(jobs) == 1  # No second request.
        else:
            assert len(rig.server.requests) == requests_before + 1  # type: ignore[union-attr]
        assert len(record.find("request", method="tools/call")) == count
        assert record.find("notif", method="notifications/cancelled") == []  # Nothing to cancel.
        await next_turn_is_accepted(rig, app, pilot, store)
        assert len(record.find("request", method="tools/call")) == count
        await quit_app(pilot, app)


# 5. While the server is still starting


def switchable_config(name: str, kind_file: Path, record: Path, **fields: Any) -> McpServerConfig:
    """A raw server (`tests.support.mcp_servers`) of the kind `kind_file` names when it starts."""
    start = (
        "import sys; from tests.support.mcp_servers import main; "
        "main([open(sys.argv[1]).read().strip()])"
    )
    return McpServerConfig(
        name=name,
        command=sys.executable,
        args=["-c", start, str(kind_file)],
        env={RECORD_ENV: str(record)},
        cwd=str(ROOT),
        **fields,
    )


async def test_esc_while_a_failed_mcp_server_restarts_for_a_call_stops_the_turn_at_once(
    rig: Rig, store: Store, record: Record, tmp_path: Path
) -> None:
    """The call's server had died; the call starts it again, and it never finishes its handshake.

    A server's tools reach the model once it has listed them, so a call to a
    server still starting is one whose server failed and is started again.
    """
    kind = tmp_path / "kind"
    kind.write_text("late")  # A quick raw server, which lists echo, wait and change...
    config = switchable_config("srv", kind, record.path, ask=False, start_timeout=120)
    app = mcp_app(store, rig, config)
    async with app.run_test(size=SIZE) as pilot:
        server = await ready(pilot, app, "srv")
        first = server.pid
        offer(app, rig, "srv__echo", {"text": "hi"})
        kind.write_text("noinit")  # ...and, started again, never answers `initialize`.
        os.kill(first, signal.SIGKILL)
        await wait_until(pilot, lambda: server.status.state is ServerState.FAILED)
        assert "srv__echo" in app.session.tools  # type: ignore[operator]
        if not rig.local:
            rig.calls(("call_1", "srv__echo", ['{"text": "hi"}']))

        await send(pilot, "say hi")
        await record.until(lambda: record.find("request", method="initialize")[1:])
        await wait_until(pilot, lambda: bool(views(app)) and "running" in statuses(app))
        assert server.status.state is ServerState.STARTING
        again = server.pid
        assert again != first

        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        assert server.status.state is ServerState.STARTING  # Left starting, not waited for.
        assert server.pid == again
        assert_stopped_on_screen(app)
        assert set(statuses(app)) == {"cancelled"}
        done = results(store, app)
        assert len(done) == calls_made(app) >= 1
        assert all(r.state == "cancelled" and r.content == CANCELLED_TOOL_RESULT for r in done)
        await next_turn_is_accepted(rig, app, pilot, store)
        assert server.status.state is ServerState.STARTING
        assert record.find("request", method="tools/call") == []  # Neither run got a call.
        assert not any("cancel sent" in head(view) for view in views(app))
        await quit_app(pilot, app)


# A server that ignores the cancel and answers late


@pytest.mark.parametrize("rig", ["openai", "anthropic"], indirect=True)  # Any provider would do.
async def test_the_late_answer_of_a_server_that_ignores_the_cancel_is_never_shown_or_stored(
    rig: Rig, store: Store, record: Record
) -> None:
    """The raw `late` server answers a call (after a progress report) once it is cancelled."""
    app = mcp_app(store, rig, stdio_config("srv", "late", record.path, ask=False))
    async with app.run_test(size=SIZE) as pilot:
        server = await ready(pilot, app, "srv")
        rig.calls(("call_1", "srv__wait", ["{}"]))
        await send(pilot, "wait")
        (started,) = await record.until(lambda: record.find("start", tool="wait"))
        await wait_until(pilot, lambda: statuses(app) == ["running"])

        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        await record.until(lambda: record.find("done", rid=started["rid"]))  # It answered.
        # The same pipe brings this answer after the late one: that was read, and dropped.
        assert await echo(server, "after") == "after"
        await pilot.pause()
        (view,) = views(app)
        assert view.status == "cancelled"
        assert view.progress_line.progress is None  # Nor was its late progress report shown.
        (result,) = results(store, app)
        assert (result.state, result.content) == ("cancelled", CANCELLED_TOOL_RESULT)
        assert "LATE" not in screen_text(app)
        await next_turn_is_accepted(rig, app, pilot, store)
        assert "LATE" not in json.dumps([repr(item) for item in stored(store, app)])
        assert rig.server is not None
        assert "LATE" not in json.dumps([r.body for r in rig.server.requests])
        await quit_app(pilot, app)
