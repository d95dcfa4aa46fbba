"""The tool loop in the turn runner: parallel calls, the step limit, and bad input."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from chatui.history import CANCELLED_TOOL_RESULT, build_history
from chatui.messages import ModelResponse, ResponseState, ToolCallPart, ToolResult
from chatui.providers.anthropic_messages import to_anthropic_messages
from chatui.providers.openai_chat import to_openai_messages
from chatui.store import Store
from chatui.tools.protocol import Approval
from chatui.tools.registry import Tool, ToolRegistry
from chatui.turn import ToolResultAdded, ToolStatusChanged, TurnSettings
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.clocks import LoopClock
from tests.support.scripted import ScriptedProvider, calls, words
from tests.support.turns import make_turn, stored


def both_protocols_accept(items: list) -> bool:
    history = build_history(items)
    _system, anthropic_messages = to_anthropic_messages(history)
    return (
        ow.validate({"messages": to_openai_messages(history)}) is None
        and aw.validate({"messages": anthropic_messages, "max_tokens": 64}) is None
    )


async def test_parallel_calls_of_one_reply_run_at_the_same_time(store: Store) -> None:
    meeting = asyncio.Barrier(3)
    finished: list[str] = []

    async def meet(who: str) -> str:
        """Wait until all three callers are here: only calls that run together get through."""
        async with asyncio.timeout(5):
            await meeting.wait()
        finished.append(who)
        return f"{who} met the others"

    three = [(who, "meet", json.dumps({"who": who})) for who in "abc"]
    provider = ScriptedProvider(calls(*three), words("All met."))
    turn, sink = make_turn(store, provider, tools=ToolRegistry([Tool(meet)]))

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert sorted(finished) == ["a", "b", "c"]
    results = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    assert {r.call_id: r.state for r in results} == {"a": "ok", "b": "ok", "c": "ok"}
    tool_messages = [m for m in provider.records[1].request.messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == ["a", "b", "c"]  # The calls' order.
    running = [e.payload.call_id for e in sink.events if isinstance(e.payload, ToolStatusChanged)]
    assert sorted(running) == ["a", "b", "c"]


async def test_a_model_that_calls_tools_for_ever_is_stopped_at_the_step_limit(
    store: Store,
) -> None:
    ran: list[int] = []

    def again() -> str:
        """Do it again."""
        ran.append(len(ran))
        return "done"

    provider = ScriptedProvider(*(calls((f"c{n}", "again", "{}")) for n in range(10)))
    turn, _ = make_turn(
        store, provider, tools=ToolRegistry([Tool(again)]), settings=TurnSettings(max_steps=3)
    )

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert outcome.error == (
        "The model was still calling tools after 3 steps (tools.max_steps), so the turn was "
        "stopped there. Send a message to let it go on."
    )
    assert len(provider.records) == 3 and ran == [0, 1]  # The third reply's call never ran.
    items = stored(store, turn)
    last = [i for i in items if isinstance(i, ToolResult)][-1]
    assert (last.call_id, last.state) == ("c2", "error")
    assert "limit of 3 model requests" in last.content
    assert all(i.state is ResponseState.COMPLETE for i in items if isinstance(i, ModelResponse))
    assert both_protocols_accept(items)


async def test_bad_calls_are_answered_with_errors_and_the_model_goes_on(store: Store) -> None:
    ran: list[str] = []

    def note(text: str) -> str:
        """Keep a note."""
        ran.append(text)
        return "kept"

    def explode() -> str:
        """Fail."""
        raise OSError("disk on fire")

    hanging = asyncio.Event()

    async def hang() -> str:
        """Never answer."""
        hanging.set()
        await asyncio.Event().wait()
        return ""

    registry = ToolRegistry([Tool(note), Tool(explode), Tool(hang, timeout=60)])
    provider = ScriptedProvider(
        calls(
            ("j", "note", '{"text": '),  # Not JSON.
            ("s", "note", '{"text": 7}'),  # Breaks the schema.
            ("u", "missing", "{}"),  # No such tool.
            ("e", "explode", "{}"),
            ("h", "hang", "{}"),
            ("ok", "note", '{"text": "fine"}'),
        ),
        words("Understood."),
    )
    turn, _ = make_turn(store, provider, tools=registry)
    clock, task = LoopClock(), asyncio.create_task(turn.run())
    await hanging.wait()
    await clock.advance(61)  # A minute without an answer from `hang`.

    outcome = await asyncio.wait_for(task, 10)

    assert outcome.state is ResponseState.COMPLETE
    assert ran == ["fine"]
    results = {i.call_id: i for i in stored(store, turn) if isinstance(i, ToolResult)}
    assert {k: r.state for k, r in results.items()} == {
        "j": "error", "s": "error", "u": "error", "e": "error", "h": "error", "ok": "ok"
    }  # fmt: skip
    assert "not valid JSON" in results["j"].content
    assert "text must be a string, not a number" in results["s"].content
    assert "There is no tool named 'missing'" in results["u"].content
    assert results["e"].content == "explode failed: OSError: disk on fire"
    assert results["h"].content == "hang did not finish within 60 s."
    sent = {
        m.tool_call_id: m.content for m in provider.records[1].request.messages if m.role == "tool"
    }
    assert sent == {k: r.content for k, r in results.items()}  # The model sees each one.
    assert both_protocols_accept(stored(store, turn))


async def test_a_denied_call_is_a_result_the_model_sees(store: Store) -> None:
    ran: list[str] = []

    def risky() -> str:
        """Do something risky."""
        ran.append("ran")
        return "done"

    async def deny(call: ToolCallPart) -> Approval:
        return Approval.DENY

    provider = ScriptedProvider(calls(("r", "risky", "{}")), words("Fine, I won't."))
    tools = ToolRegistry([Tool(risky, needs_approval=True)])
    turn, _ = make_turn(store, provider, tools=tools, approve=deny)

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE and ran == []
    (result,) = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    assert (result.state, result.content) == ("denied", "The user denied this tool call.")
    (tool_message,) = [m for m in provider.records[1].request.messages if m.role == "tool"]
    assert tool_message.content == "The user denied this tool call."


async def test_a_key_in_a_tool_result_is_never_stored_shown_or_sent(store: Store) -> None:
    secret = "sk-test-4f9a2c7e1b8d6053aa71c0de99f1e2b3"

    def read_config() -> str:
        """Read the config file."""
        return f'[openai]\napi_key = "{secret}"\n'

    provider = ScriptedProvider(calls(("c1", "read_config", "{}")), words("I see a key."))
    turn, sink = make_turn(
        store,
        provider,
        tools=ToolRegistry([Tool(read_config)]),
        settings=TurnSettings(secrets=[secret]),
    )

    await turn.run()

    (result,) = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    assert result.content == '[openai]\napi_key = "***"\n'
    shown = [e.payload.result.content for e in sink.events if hasattr(e.payload, "result")]
    assert shown == [result.content]
    assert secret not in repr(provider.records[1].request.messages)


async def test_a_full_disk_while_storing_a_result_fails_the_turn_clearly(store: Store) -> None:
    def big() -> str:
        """A big result."""
        return "x" * 200_000

    provider = ScriptedProvider(calls(("c1", "big", "{}")), words("never"))
    turn, _ = make_turn(store, provider, tools=ToolRegistry([Tool(big)]))
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 8}")  # Room for the reply, not this.

    outcome = await turn.run()  # A storage failure never escapes.

    assert outcome.state is ResponseState.FAILED
    assert "could not be saved" in (outcome.error or "") and "free some disk space" in (
        outcome.error or ""
    )
    assert len(provider.records) == 1  # Nothing sent on a result that was not stored.


async def test_a_tool_that_exits_the_program_is_an_error_and_the_turn_goes_on(
    store: Store,
) -> None:
    def leave() -> str:
        """Leave."""
        sys.exit(3)

    async def leave_async() -> str:
        """Leave too."""
        await asyncio.sleep(0)
        sys.exit(4)

    provider = ScriptedProvider(
        calls(("s", "leave", "{}"), ("a", "leave_async", "{}")), words("Still here.")
    )
    turn, sink = make_turn(store, provider, tools=ToolRegistry([Tool(leave), Tool(leave_async)]))

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    results = {i.call_id: i for i in stored(store, turn) if isinstance(i, ToolResult)}
    assert {k: r.state for k, r in results.items()} == {"s": "error", "a": "error"}
    assert "leave tried to exit the program (SystemExit: 3)" in results["s"].content
    assert "leave_async tried to exit the program (SystemExit: 4)" in results["a"].content
    sent = [m.content for m in provider.records[1].request.messages if m.role == "tool"]
    assert sent == [results["s"].content, results["a"].content]  # The model hears of it.
    shown = [e.payload.result.state for e in sink.events if isinstance(e.payload, ToolResultAdded)]
    assert shown == ["error", "error"]


async def fetch() -> str:
    """Fetch something, awaiting work that something else cancels."""
    inner = asyncio.create_task(asyncio.Event().wait())  # Never set.
    asyncio.get_running_loop().call_soon(inner.cancel)
    return await inner


class CancelledRunner:
    """A tool runner (not the registry) whose call raises a cancellation of its own."""

    def specs(self) -> list:
        return []

    async def run(self, call: ToolCallPart, approve, report) -> ToolResult:  # type: ignore[no-untyped-def]
        await report("running")
        await fetch()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("runner", ["registry", "another runner"])
async def test_a_tool_cancelled_by_something_else_is_an_error_and_the_turn_goes_on(
    store: Store, runner: str
) -> None:
    tools = ToolRegistry([Tool(fetch)]) if runner == "registry" else CancelledRunner()
    provider = ScriptedProvider(calls(("c1", "fetch", "{}")), words("I see."))
    turn, sink = make_turn(store, provider, tools=tools)

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE and not turn.token.requested
    items = stored(store, turn)
    (result,) = [i for i in items if isinstance(i, ToolResult)]
    assert result.state == "error" and result.content != CANCELLED_TOOL_RESULT
    assert "cancelled by something other than the user" in result.content
    assert all(i.state is ResponseState.COMPLETE for i in items if isinstance(i, ModelResponse))
    shown = [e.payload.result for e in sink.events if isinstance(e.payload, ToolResultAdded)]
    assert [(r.state, r.content) for r in shown] == [(result.state, result.content)]
    (sent,) = [m.content for m in provider.records[1].request.messages if m.role == "tool"]
    assert sent == result.content
