"""The tool registry: schemas from signatures, validation, approval, timeouts, failures."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Literal

import pytest

from chatui.cancel import CancelToken, current_token
from chatui.messages import ToolCallPart
from chatui.tools.protocol import Approval
from chatui.tools.registry import Tool, ToolFailed, ToolRegistry
from chatui.tools.schema import InvalidArguments, describe, validate
from tests.support.clocks import LoopClock


def search(query: str, limit: int = 5, exact: bool = False, unit: Literal["km", "mi"] = "km",
           tags: list[str] | None = None) -> str:  # fmt: skip
    """Search the notes.

    A second paragraph, not part of the description.

    Args:
        query: What to look for.
        limit: At most this many
            results.
        exact: Whole words only.
    """
    return f"{query}:{limit}:{exact}:{unit}:{tags}"


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    description, schema = describe(search)

    assert description == "Search the notes."
    assert schema == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "description": "At most this many results.", "default": 5},
            "exact": {"type": "boolean", "description": "Whole words only.", "default": False},
            "unit": {"enum": ["km", "mi"], "default": "km"},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_a_parameter_without_a_json_form_or_a_docstring_is_refused() -> None:
    def untyped(x) -> str:  # type: ignore[no-untyped-def]
        """Doc."""
        return ""

    def odd(x: complex) -> str:
        """Doc."""
        return ""

    def undocumented(x: int) -> str:
        return ""

    with pytest.raises(TypeError, match="no type annotation"):
        Tool(untyped)
    with pytest.raises(TypeError, match="no JSON schema"):
        Tool(odd)
    with pytest.raises(TypeError, match="needs a docstring"):
        Tool(undocumented)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "missing required argument 'query'"),
        ({"query": 3}, "query must be a string, not a number"),
        ({"query": "a", "limit": "5"}, "limit must be an integer, not a string"),
        ({"query": "a", "limit": 2.5}, "limit must be an integer, not a number"),
        ({"query": "a", "exact": 1}, "exact must be a boolean, not a number"),
        ({"query": "a", "unit": "m"}, 'unit must be one of "km", "mi", not "m"'),
        ({"query": "a", "tags": ["x", 2]}, "tags[1] must be a string, not a number"),
        ({"query": "a", "color": "red"}, "unknown argument 'color'"),
    ],
)
def test_arguments_that_break_the_schema_are_refused_with_a_reason(
    arguments: dict[str, object], problem: str
) -> None:
    _, schema = describe(search)
    with pytest.raises(InvalidArguments) as error:
        validate(arguments, schema)
    assert problem in str(error.value)


def test_valid_arguments_get_their_defaults() -> None:
    _, schema = describe(search)
    assert validate({"query": "a", "limit": 3.0, "tags": None}, schema) == {
        "query": "a",
        "limit": 3,
        "exact": False,
        "unit": "km",
        "tags": None,
    }


class Reports:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, status: str) -> None:
        self.seen.append(status)


async def approve_once(call: ToolCallPart) -> Approval:
    return Approval.ONCE


def call(name: str, arguments: str) -> ToolCallPart:
    return ToolCallPart("c1", name, arguments, complete=True)


async def run(registry: ToolRegistry, name: str, arguments: str, approve=approve_once):  # type: ignore[no-untyped-def]
    reports = Reports()
    result = await registry.run(call(name, arguments), approve, reports)
    return result, reports.seen


async def test_a_sync_tool_runs_off_the_event_loop() -> None:
    threads: list[str] = []

    def where() -> str:
        """Which thread runs this."""
        threads.append(threading.current_thread().name)
        return "here"

    result, seen = await run(ToolRegistry([Tool(where)]), "where", "{}")

    assert (result.state, result.content) == ("ok", "here")
    assert threads and threads[0] != threading.main_thread().name
    assert seen == ["running"]


async def test_bad_input_becomes_an_error_result_the_model_sees() -> None:
    ran: list[dict[str, object]] = []

    def note(text: str, count: int = 1) -> str:
        """Keep a note."""
        ran.append({"text": text, "count": count})
        return "kept"

    registry = ToolRegistry([Tool(note)])
    cases = {
        "not json": ("note", '{"text": "a'),
        "not an object": ("note", '["a"]'),
        "breaks the schema": ("note", '{"text": "a", "count": "two"}'),
        "unknown tool": ("nope", "{}"),
    }
    results = {case: (await run(registry, *args))[0] for case, args in cases.items()}

    assert ran == []
    assert all(r.state == "error" for r in results.values())
    assert "not valid JSON" in results["not json"].content
    assert "must be a JSON object, not an array" in results["not an object"].content
    assert "count must be an integer, not a string" in results["breaks the schema"].content
    assert "There is no tool named 'nope' (the tools: note)" in results["unknown tool"].content
    assert all("Nothing was run" in results[c].content for c in list(cases)[:3])


async def test_a_tool_that_raises_gives_its_error_as_the_result() -> None:
    def explode() -> str:
        """Fail."""
        raise KeyError("fuse")

    def refuse() -> str:
        """Refuse."""
        raise ToolFailed("Refused: not today.")

    registry = ToolRegistry([Tool(explode), Tool(refuse)])
    exploded, _ = await run(registry, "explode", "")
    refused, _ = await run(registry, "refuse", "")

    assert (exploded.state, exploded.content) == ("error", "explode failed: KeyError: 'fuse'")
    assert (refused.state, refused.content) == ("error", "Refused: not today.")


async def test_a_tool_that_hangs_is_cancelled_at_its_timeout() -> None:
    clock = LoopClock()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang() -> str:
        """Never answer."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return ""

    running = asyncio.create_task(run(ToolRegistry([Tool(hang, timeout=60)]), "hang", "{}"))
    await started.wait()
    await clock.advance(61)  # A minute without an answer.
    result, _ = await asyncio.wait_for(running, 10)

    assert (result.state, result.content) == ("error", "hang did not finish within 60 s.")
    assert cancelled.is_set()


async def test_approval_is_asked_before_the_run_and_a_denial_is_a_result() -> None:
    ran: list[str] = []

    def risky() -> str:
        """Do something risky."""
        ran.append("ran")
        return "done"

    registry = ToolRegistry([Tool(risky, needs_approval=True)])
    asked: list[str] = []

    async def deny(call: ToolCallPart) -> Approval:
        asked.append(call.name)
        return Approval.DENY

    denied, seen_denied = await run(registry, "risky", "{}", approve=deny)
    approved, seen_approved = await run(registry, "risky", "{}")

    assert (denied.state, denied.content) == ("denied", "The user denied this tool call.")
    assert seen_denied == ["approval"] and asked == ["risky"]
    assert (approved.state, approved.content) == ("ok", "done")
    assert seen_approved == ["approval", "running"]
    assert ran == ["ran"]


async def test_invalid_arguments_are_refused_before_asking_the_user() -> None:
    def risky(path: str) -> str:
        """Do something risky."""
        return ""

    asked: list[str] = []

    async def approve(call: ToolCallPart) -> Approval:
        asked.append(call.name)
        return Approval.ONCE

    registry = ToolRegistry([Tool(risky, needs_approval=True)])
    result, seen = await run(registry, "risky", "{}", approve=approve)

    assert result.state == "error" and asked == [] and seen == []


def test_two_tools_cannot_share_a_name() -> None:
    def echo() -> str:
        """Echo."""
        return ""

    with pytest.raises(ValueError, match="two tools are named 'echo'"):
        ToolRegistry([Tool(echo), Tool(echo)])


def exits(how: str, kind: str) -> Tool:
    """A tool that ends the program (`sys.exit(3)`, or a KeyboardInterrupt), sync or async."""

    def leave() -> str:
        """Leave."""
        if how == "exit":
            sys.exit(3)
        raise KeyboardInterrupt

    async def leave_async() -> str:
        """Leave."""
        await asyncio.sleep(0)
        return leave()

    return Tool(leave_async if kind == "async" else leave, name="leave")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("how", "said"), [("exit", "(SystemExit: 3)"), ("interrupt", "(KeyboardInterrupt)")]
)
async def test_a_tool_that_exits_the_program_is_an_error_result(
    kind: str, how: str, said: str
) -> None:
    try:
        result, _ = await run(ToolRegistry([exits(how, kind)]), "leave", "{}")
    except BaseException as escaped:  # Caught here, or it would end the test run.
        pytest.fail(f"the tool's {type(escaped).__name__} left run()")

    assert result.state == "error"
    assert result.content == (
        f"leave tried to exit the program {said}; it was stopped there, and chatui goes on."
    )


async def cancelled_inside() -> str:
    """Await work that something else cancels."""
    inner = asyncio.create_task(asyncio.Event().wait())  # Never set.
    asyncio.get_running_loop().call_soon(inner.cancel)
    return await inner


async def test_a_tool_whose_own_work_was_cancelled_is_an_error_not_a_stop() -> None:
    try:
        result, seen = await run(ToolRegistry([Tool(cancelled_inside)]), "cancelled_inside", "")
    except asyncio.CancelledError:
        pytest.fail("the tool's own cancellation left run() as a stop")

    assert (result.state, seen) == ("error", ["running"])
    assert result.content == (
        "cancelled_inside was cancelled by something other than the user (work it waited for "
        "was cancelled), so it gave no result."
    )
    assert "by the user" not in result.content.replace("other than the user", "")


async def test_a_stop_while_a_tool_runs_still_leaves_run_as_a_cancellation() -> None:
    """The user's stop (its token, or the task's cancel) is a stop, whatever the tool raises."""
    running = asyncio.Event()

    async def wait() -> str:
        """Wait."""
        running.set()
        await asyncio.Event().wait()
        return ""

    registry = ToolRegistry([Tool(wait), Tool(cancelled_inside)])
    task = asyncio.create_task(run(registry, "wait", "{}"))
    await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    token = CancelToken()

    async def stopped_then_cancelled() -> object:
        current_token.set(token)  # As the turn sets it for its tools.
        token.cancel()
        return await run(registry, "cancelled_inside", "{}")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(stopped_then_cancelled())


async def test_a_sync_tool_runs_on_a_daemon_thread_that_nothing_waits_for() -> None:
    """A call that never returns cannot hold up the loop's shutdown or the interpreter's exit."""
    clock, loop = LoopClock(), asyncio.get_running_loop()
    release, started = threading.Event(), asyncio.Event()
    seen: list[threading.Thread] = []

    def block() -> str:
        """Block until released."""
        seen.append(threading.current_thread())
        loop.call_soon_threadsafe(started.set)
        release.wait()
        return "released"

    try:
        running = asyncio.create_task(run(ToolRegistry([Tool(block, timeout=60)]), "block", "{}"))
        await started.wait()
        await clock.advance(61)  # Past its timeout: the call is given up on.
        result, _ = await asyncio.wait_for(running, 10)
        assert (result.state, result.content) == ("error", "block did not finish within 60 s.")
        (thread,) = seen
        assert thread.daemon and thread.is_alive()  # Left behind, and never joined.
        loop = asyncio.get_running_loop()
        assert loop._default_executor is None  # The loop's own executor was never used.
    finally:
        release.set()
