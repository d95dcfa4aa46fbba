"""Esc at every point of a tool call, in the app, with each of the three providers.

The four stop points of the tools issue: while a call's arguments stream,
while the approval dialog is open, while a tool runs (a shell command with a
child and a grandchild), and between the last tool result and the next model
request. OpenAI and Anthropic are the real SDKs against the validating wire
servers; local is real llama.cpp on the tiny GGUF, whose calls a grammar
writes (`tool_choice = "required"`). Each test checks:

- what is stored (the call, its raw partial arguments or its result);
- what the screen shows (the call's status, the reply's marker, the status);
- that no cut-off or cancelled call ran (the tools record their invocations);
- that no process the shell started is alive;
- that the next request is accepted: by the provider's own server, and the
  repaired history by both protocols' validators; for local, that the KV
  cache holds only committed tokens and the next turn reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatui.config import ToolsConfig
from chatui.history import CANCELLED_TOOL_RESULT
from chatui.messages import ModelResponse, ResponseState, ToolResult, UserPrompt
from chatui.screens.approval import ApprovalDialog
from chatui.screens.chat import ChatScreen
from chatui.store import Store
from chatui.tools.builtin import build_registry
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.status_bar import StatusBar
from tests.support.app import approval_shown, make_app, send, settled, wait_until
from tests.support.processes import (
    living,
    marker,
    nested_sleepers,
    one_command_schema,
    until_running,
)
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
)

SIZE = (100, 40)


class Tools:
    """The test's tools, which record every invocation: `note`, `record` and `shell`."""

    def __init__(self, workspace: Path, command: str | None = None) -> None:
        """`command`: the one command the shell's schema allows (the local model's grammar)."""
        self.invocations: list[tuple[str, Any]] = []
        real_shell = build_registry(ToolsConfig(enabled=["shell"]), workspace=workspace)["shell"]

        def note(text: str) -> str:
            """Keep a note."""
            self.invocations.append(("note", text))
            return "noted"

        def record() -> str:
            """Record that it was called."""
            self.invocations.append(("record", None))
            return "recorded"

        async def shell(command: str) -> str:
            """Run a shell command."""
            self.invocations.append(("shell", command))
            return await real_shell.function(command)

        shell_schema = one_command_schema(command) if command is not None else {}
        self.note = Tool(note)
        self.record = Tool(record)
        self.shell = Tool(shell, parameters=shell_schema, needs_approval=True, timeout=60)

    def only(self, *tools: Tool) -> ToolRegistry:
        return ToolRegistry(tools)

    def ran(self, name: str) -> list[Any]:
        return [arguments for tool, arguments in self.invocations if tool == name]


class ShellRig(Rig):
    """A provider kind, and the test's tools (for local, a shell that allows one command)."""

    def __init__(self, kind: str, tmp_path: Path, model: Path) -> None:
        super().__init__(kind, tmp_path, model)
        self.mark = marker()
        self.command = nested_sleepers(self.mark)
        self.tools = Tools(tmp_path, self.command if self.local else None)


@pytest.fixture(params=KINDS)
def rig(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[ShellRig]:
    rig = ShellRig(request.param, tmp_path, tiny_model)
    yield rig
    rig.close()
    assert living(rig.mark) == []


# 1. While a call's arguments stream


async def test_esc_while_arguments_stream_keeps_the_call_cut_off_and_never_runs_it(
    rig: ShellRig, store: Store
) -> None:
    app = make_app(store, rig.provider, tools=rig.tools.only(rig.tools.note))
    async with app.run_test(size=SIZE) as pilot:
        shown = await stop_while_arguments_stream(rig, app, pilot, "note", "take a note")

        assert_cut_off(store, app, shown)
        assert rig.tools.invocations == []
        await next_turn_is_accepted(rig, app, pilot, store, kept=False)
        assert rig.tools.invocations == []


# 2. While the approval dialog is open


async def test_one_esc_in_the_approval_dialog_closes_it_and_stops_the_turn(
    rig: ShellRig, store: Store
) -> None:
    app = make_app(store, rig.provider, tools=rig.tools.only(rig.tools.shell))
    async with app.run_test(size=SIZE) as pilot:
        if not rig.local:
            rig.calls(("call_1", "shell", [json.dumps({"command": rig.command})]))
        await send(pilot, "run it")
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalDialog))
        assert "approval" in statuses(app)
        assert app.chat.query_one(StatusBar).state == "awaiting approval"

        await pilot.press("escape")  # Once.
        await wait_until(pilot, settled(app))

        assert isinstance(app.screen, ChatScreen)  # The dialog is gone.
        assert set(statuses(app)) == {"cancelled"}
        assert_stopped_on_screen(app)
        items = stored(store, app)
        response = next(i for i in items if isinstance(i, ModelResponse))
        results = [i for i in items if isinstance(i, ToolResult)]
        assert response.state is ResponseState.COMPLETE  # The call itself was whole.
        assert len(results) == len(response.tool_calls) >= 1
        assert all(r.state == "cancelled" and r.content == CANCELLED_TOOL_RESULT for r in results)
        assert rig.tools.invocations == []
        assert living(rig.mark) == []
        if rig.server is not None:
            assert len(rig.server.requests) == 1
        await next_turn_is_accepted(rig, app, pilot, store)


# 3. While a tool runs


async def test_esc_while_a_shell_command_runs_kills_its_process_group(
    rig: ShellRig, store: Store
) -> None:
    app = make_app(store, rig.provider, tools=rig.tools.only(rig.tools.record, rig.tools.shell))
    async with app.run_test(size=SIZE) as pilot:
        if rig.local:
            app.session.tools = rig.tools.only(rig.tools.shell)  # The grammar writes shells.
        else:
            command = json.dumps({"command": rig.command})
            rig.calls(("call_1", "record", ["{}"]), ("call_2", "shell", [command]))
        await send(pilot, "run it")
        await wait_until(pilot, approval_shown(app))  # A key typed before it: not an answer.
        await pilot.press("a")  # For this conversation: parallel shells run without asking.
        calls = app.chat.turn_view.views[0].response.tool_calls
        shells = len([c for c in calls if c.name == "shell"])
        await wait_until(pilot, lambda: len(rig.tools.ran("shell")) == shells)
        await until_running(rig.mark, 2 * shells)  # Each: a child and a grandchild.
        await wait_until(pilot, lambda: statuses(app).count("running") == shells)

        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        assert living(rig.mark) == []  # The children and grandchildren too.
        assert_stopped_on_screen(app)
        items = stored(store, app)
        results = {r.call_id: r for r in items if isinstance(r, ToolResult)}
        response = next(i for i in items if isinstance(i, ModelResponse))
        assert len(results) == len(response.tool_calls)
        by_name = {c.id: c.name for c in response.tool_calls}
        assert {r.state for r in results.values() if by_name[r.call_id] == "shell"} == {"cancelled"}
        if not rig.local:
            assert results["call_1"].state == "ok"  # A parallel call that finished is kept.
            assert rig.tools.ran("record") == [None]
            assert statuses(app) == ["done", "cancelled"]
        else:
            assert set(statuses(app)) == {"cancelled"}
        await next_turn_is_accepted(rig, app, pilot, store)
        assert len(rig.tools.ran("shell")) == shells  # Never run again.


# 4. Between a tool result and the next request


async def test_a_stop_after_the_last_result_sends_nothing_more(rig: ShellRig, store: Store) -> None:
    app = make_app(store, rig.provider, tools=rig.tools.only(rig.tools.record))
    async with app.run_test(size=SIZE) as pilot:
        if not rig.local:
            rig.calls(("call_1", "record", ["{}"]), ("call_2", "record", [""]))
        jobs, requests_before = await stop_after_the_last_result(rig, app, pilot, "record")

        assert_stopped_on_screen(app)
        assert set(statuses(app)) == {"done"}
        items = stored(store, app)
        response = next(i for i in items if isinstance(i, ModelResponse))
        calls = len(response.tool_calls)
        assert calls >= 2 and len(rig.tools.ran("record")) == calls
        assert [r.state for r in items if isinstance(r, ToolResult)] == ["ok"] * calls
        assert [type(i) for i in items] == [UserPrompt, ModelResponse] + [ToolResult] * calls
        if rig.local:
            assert len(jobs) == 1  # No second request.
        else:
            assert len(rig.server.requests) == requests_before + 1  # type: ignore[union-attr]
        await next_turn_is_accepted(rig, app, pilot, store)
