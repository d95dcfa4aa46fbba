"""MCP servers' lifecycle: start, calls, the stop on the server, death, restart, no leftovers.

Real servers (`tests/support/mcp_servers.py`): the SDK's own `MCPServer`
over stdio and over Streamable HTTP on 127.0.0.1, and raw JSON-RPC servers
that misbehave (answer late, crash, write garbage, never finish the
handshake). They record what their handlers saw in a file the tests read.
No app here: an `McpManager` over a registry of its own (`McpRig`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chatui.mcp.events import CancelSent, StatusChanged
from chatui.mcp.logs import KEEP_LOG_BYTES, MAX_LOG_BYTES, ServerLog
from chatui.mcp.server import McpCallError
from chatui.mcp.status import ServerState
from tests.support.clocks import LoopClock
from tests.support.mcp import (
    HttpServer,
    McpRig,
    Record,
    http_config,
    http_server,
    stdio_config,
    until,
)
from tests.support.processes import alive, group_alive, living, marker, until_running

TRANSPORTS = ["stdio", "http"]


@pytest.fixture
def record(tmp_path: Path) -> Record:
    return Record(tmp_path / "record.jsonl")


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[Callable[..., McpRig]]:
    """Makes `McpRig`s; each is closed at the end, and every server process killed."""
    made: list[McpRig] = []

    def make(*servers, environ=None, secrets=None) -> McpRig:
        made.append(McpRig(tmp_path / "logs", list(servers), environ, secrets))
        return made[-1]

    yield make
    for rig in made:
        await rig.manager.close()


@pytest.fixture
def standard_http(tmp_path: Path, record: Record) -> Iterator[HttpServer]:
    with http_server("standard", record.path) as server:
        yield server


@pytest.fixture(params=TRANSPORTS)
def standard(request: pytest.FixtureRequest, record: Record):
    """The SDK server's config named "std", over each transport in turn."""
    if request.param == "stdio":
        return stdio_config("std", "standard", record.path)
    return http_config("std", request.getfixturevalue("standard_http"))


def texts(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


# Start and call


async def test_a_server_starts_in_the_background_and_becomes_ready_with_its_tools(
    rigs, standard
) -> None:
    rig = rigs(standard)
    server = rig.server("std")
    assert server.status.state is ServerState.STOPPED

    rig.manager.start()  # Returns at once: the handshake goes on in the background.

    assert server.status.state is ServerState.STARTING
    await server.ready()
    status = server.status
    assert (status.state, status.tools, status.reason) == (ServerState.READY, 6, "")
    assert status.log_path == str(rig.log_dir / "std.log")
    assert {tool.name for tool in server.listing} == {
        "slow",
        "stubborn",
        "echo",
        "change_tools",
        "env",
        "spawn_child",
    }
    assert rig.states("std") == [ServerState.STARTING, ServerState.READY]
    assert sorted(rig.registry.names) == [
        "std__change_tools",
        "std__echo",
        "std__env",
        "std__slow",
        "std__spawn_child",
        "std__stubborn",
    ]


async def test_a_call_returns_the_servers_answer(rigs, standard) -> None:
    rig = rigs(standard)

    result = await rig.call("std", "echo", {"text": "hello there"})

    assert texts(result) == "hello there"
    assert result.is_error is False


async def test_a_call_before_any_start_starts_the_server(rigs, record: Record) -> None:
    rig = rigs(stdio_config("raw", "late", record.path))

    assert await rig.text("raw", "echo", {"text": "first"}) == "first"

    assert rig.server("raw").status.state is ServerState.READY


async def test_a_result_of_megabytes_comes_through_whole(rigs, record: Record) -> None:
    rig = rigs(stdio_config("raw", "late", record.path))
    text = "".join(f"{n:09d}\n" for n in range(300_000))  # 3 MB, in one JSON-RPC line.

    assert await rig.text("raw", "echo", {"text": text}) == text


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"command": "no-such-program-here"},
            "chatui could not start it: no program 'no-such-program-here' was found (check PATH).",
        ),
        (
            {"cwd": "/no/such/dir"},
            "chatui could not start it: its directory '/no/such/dir' does not exist.",
        ),
    ],
)
async def test_a_server_that_cannot_be_run_fails_with_the_reason(
    rigs, record: Record, fields: dict, reason: str
) -> None:
    config = stdio_config("gone", "late", record.path)
    for name, value in fields.items():
        setattr(config, name, value)
    rig = rigs(config)
    server = rig.server("gone")

    with pytest.raises(McpCallError) as failure:
        await server.ready()

    assert str(failure.value) == f"The MCP server gone could not start. {reason}"
    assert (server.status.state, server.status.reason) == (ServerState.FAILED, reason)


# The stop


async def test_a_cancelled_call_is_cancelled_on_the_server_and_the_server_lives_on(
    rigs, standard, record: Record
) -> None:
    rig = rigs(standard)
    server = rig.server("std")
    await server.ready()
    pid = server.pid
    progress: list = []
    call = asyncio.create_task(
        rig.call("std", "slow", {"seconds": 600}, call_id="c1", progress=progress.append)
    )
    (started,) = await record.until(lambda: record.find("start", tool="slow"))
    await until(lambda: progress)  # It runs, and says so.

    call.cancel()
    await asyncio.sleep(0)  # One turn of the loop: the caller's task handles its cancellation.

    assert call.cancelled()  # At once: it did not wait for the cancellation to be written...
    assert not rig.cancel_sent("c1")  # ...which is still to be sent.
    await until(lambda: rig.cancel_sent("c1"))
    assert [e for e in rig.events if isinstance(e, CancelSent)] == [CancelSent("c1", "std")]
    rid = started["rid"]
    await record.until(lambda: record.find("handler_cancelled", rid=rid))
    if standard.transport == "stdio":
        assert record.cancelled(rid)
    else:  # The 2026 protocol over HTTP: the call's POST is aborted, no notification.
        assert record.cancelled(rid) == []
    shown = len(progress)
    assert await rig.text("std", "echo", {"text": "still here"}) == "still here"
    assert server.pid == pid  # The same process answered.
    assert len(progress) == shown  # Nothing of the stopped call came after the stop.
    assert record.find("done", tool="slow") == []


async def test_a_late_answer_after_the_cancel_is_dropped_and_the_next_call_gets_its_own(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("careless", "late", record.path))
    progress: list = []
    call = asyncio.create_task(rig.call("careless", "wait", call_id="c1", progress=progress.append))
    (started,) = await record.until(lambda: record.find("start", tool="wait"))

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call
    await record.until(lambda: record.cancelled(started["rid"]))
    await record.until(lambda: record.find("done", tool="wait"))  # Its progress and "LATE" are out.
    assert await rig.text("careless", "echo", {"text": "my own"}) == "my own"
    assert progress == []
    assert rig.server("careless").status.state is ServerState.READY


async def test_a_stop_while_the_server_starts_leaves_it_starting_and_it_fails_at_its_timeout(
    rigs, record: Record
) -> None:
    clock = LoopClock()
    rig = rigs(stdio_config("mute", "noinit", record.path, start_timeout=30.0))
    server = rig.server("mute")
    waiting = asyncio.create_task(server.ready())
    (handshake,) = await record.until(lambda: record.find("request", method="initialize"))

    waiting.cancel()  # The caller's stop (Esc while it starts).

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert server.status.state is ServerState.STARTING
    await clock.advance(31.0)
    await until(lambda: server.status.state is ServerState.FAILED)
    assert server.status.reason == (
        "It did not finish starting within 30 s (the handshake or the tools' list)."
    )
    await until(lambda: not alive(handshake["pid"]))
    assert rig.states("mute") == [ServerState.STARTING, ServerState.FAILED]


async def test_a_call_waiting_for_a_server_that_never_starts_fails_with_the_reason(
    rigs, record: Record
) -> None:
    clock = LoopClock()
    rig = rigs(stdio_config("mute", "noinit", record.path, start_timeout=30.0))
    call = asyncio.create_task(rig.call("mute", "echo", {"text": "x"}))
    await record.until(lambda: record.find("request", method="initialize"))

    await clock.advance(31.0)

    with pytest.raises(McpCallError) as failure:
        await call
    assert str(failure.value) == (
        "The MCP server mute could not start. It did not finish starting within 30 s "
        "(the handshake or the tools' list)."
    )


# A server that dies


async def test_a_server_that_crashes_mid_call_fails_the_call_and_starts_again_on_next_use(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("crashy", "crash", record.path))
    server = rig.server("crashy")
    await server.ready()
    first = server.pid

    with pytest.raises(McpCallError) as failure:
        await rig.call("crashy", "wait", call_id="c1")

    assert str(failure.value) == (
        "The MCP server crashy stopped during the call. It exited with code 3. "
        "It will be started again on its next use."
    )
    assert (server.status.state, server.status.reason) == (
        ServerState.FAILED,
        "It exited with code 3.",
    )
    assert server.status.tools == 3  # Its tools are kept, so that a call can start it again...
    assert sorted(rig.registry.names) == ["crashy__change", "crashy__echo", "crashy__wait"]
    assert await rig.text("crashy", "echo", {"text": "back"}) == "back"
    assert server.status.state is ServerState.READY
    assert server.pid != first
    assert not rig.cancel_sent("c1")
    assert rig.states("crashy") == [
        ServerState.STARTING,
        ServerState.READY,
        ServerState.FAILED,
        ServerState.STARTING,
        ServerState.READY,
    ]


async def test_an_http_server_that_goes_away_mid_call_fails_the_call_and_the_server(
    rigs, standard_http: HttpServer, record: Record
) -> None:
    rig = rigs(http_config("web", standard_http))
    call = asyncio.create_task(rig.call("web", "slow", {"seconds": 600}))
    await record.until(lambda: record.find("start", tool="slow"))

    os.killpg(standard_http.pid, signal.SIGKILL)

    with pytest.raises(McpCallError) as failure:
        await call
    assert str(failure.value) == (
        "The MCP server web stopped during the call. It closed the connection. "
        "It will be started again on its next use."
    )
    server = rig.server("web")
    assert (server.status.state, server.status.reason) == (
        ServerState.FAILED,
        "It closed the connection.",
    )
    with pytest.raises(McpCallError) as again:  # The next use tries again; nobody answers.
        await rig.call("web", "echo", {"text": "anyone?"})
    assert str(again.value) == (
        f"The MCP server web could not start. chatui could not reach it at "
        f"{standard_http.url}: All connection attempts failed."
    )


async def test_an_error_the_server_answers_is_the_calls_failure(rigs, record: Record) -> None:
    rig = rigs(stdio_config("raw", "late", record.path))

    with pytest.raises(McpCallError) as failure:
        await rig.call("raw", "nonesuch")

    assert str(failure.value) == (
        "The MCP server raw answered the call with an error: no tool nonesuch."
    )
    assert rig.server("raw").status.state is ServerState.READY


async def test_a_server_that_exits_while_idle_is_failed_with_its_exit_code(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("std", "standard", record.path))
    server = rig.server("std")
    await server.ready()

    rig.manager.kill_now()  # Its process group gets SIGKILL behind its back.

    await until(lambda: server.status.state is ServerState.FAILED)
    assert server.status.reason == "It was killed by SIGKILL."


async def test_a_restart_starts_a_new_process(rigs, record: Record) -> None:
    rig = rigs(stdio_config("raw", "late", record.path))
    server = rig.server("raw")
    await server.ready()
    first = server.pid

    rig.manager.restart("raw")

    await until(lambda: server.status.state is ServerState.READY and server.pid != first)
    await until(lambda: not alive(first))
    assert await rig.text("raw", "echo", {"text": "again"}) == "again"


# The tool list


@pytest.mark.parametrize("era", ["2026", "2025"])
async def test_a_changed_tool_list_is_listed_again(
    rigs, tmp_path: Path, record: Record, era: str
) -> None:
    if era == "2026":  # The SDK server: the change comes through subscriptions/listen.
        config, change = stdio_config("srv", "standard", record.path), "change_tools"
    else:  # A 2025 server: notifications/tools/list_changed.
        config, change = stdio_config("srv", "late", record.path), "change"
    rig = rigs(config)
    server = rig.server("srv")
    await server.ready()
    before = server.status.tools

    await rig.call("srv", change)

    await until(lambda: "srv__extra" in rig.registry.names)
    assert "extra" in {tool.name for tool in server.listing}
    assert server.status.tools == before + 1
    told = [e.status.tools for e in rig.events if isinstance(e, StatusChanged)]
    assert told[-1] == before + 1


async def test_a_changed_tool_list_over_http_is_listed_again(
    rigs, standard_http: HttpServer
) -> None:
    rig = rigs(http_config("web", standard_http))
    server = rig.server("web")
    await server.ready()

    await rig.call("web", "change_tools", {"add": True})

    await until(lambda: "web__extra" in rig.registry.names)
    assert len(rig.registry.names) == server.status.tools == 7


# Logs, the terminal, the environment


async def test_garbage_on_stdout_is_logged_and_never_reaches_the_terminal(
    rigs, record: Record, capfd: pytest.CaptureFixture[str]
) -> None:
    rig = rigs(stdio_config("noisy", "garbage", record.path))

    assert await rig.text("noisy", "wait") == "ok after garbage"
    logging.getLogger("mcp.client.session").error("an SDK error with no server's task")

    log = rig.log("noisy")
    assert "this is not json" in log
    assert "stderr: garbage server started" in log
    assert "an SDK error with no server's task" in (rig.log_dir / "chatui.sdk.log").read_text()
    out, err = capfd.readouterr()
    assert "json" not in out + err
    assert "server started" not in out + err
    assert "SDK error" not in out + err


async def test_keys_never_reach_a_servers_log(rigs, record: Record) -> None:
    key = "sk-proj-Abc123Def456Ghi789Jkl0"
    token = "ghp_Zyx987Wvu654Tsr321Qpo0"
    server = stdio_config("raw", "late", record.path, env={"GITHUB_TOKEN": token})
    rig = rigs(server, secrets=[key])

    await rig.text("raw", "echo", {"text": f"the key {key}, the token {token}"})
    await rig.manager.close()  # Its stderr is all in.

    log = rig.log("raw")
    assert "got tools/call" in log  # The server wrote the arguments to its stderr...
    assert "the key ***, the token ***" in log  # ...which the log has without the keys.
    assert key[8:16] not in log and token[4:12] not in log


def test_a_log_too_long_is_cut_to_its_end_when_its_server_starts(tmp_path: Path) -> None:
    path = tmp_path / "raw.log"
    lines = [f"line {n:07d}" for n in range(MAX_LOG_BYTES // 10)]
    path.write_text("\n".join(lines) + "\n")

    ServerLog(path).begin("starting raw")

    text = path.read_text()
    assert len(text.encode()) <= KEEP_LOG_BYTES + 100
    kept = text.splitlines()
    assert kept[-1].endswith("--- starting raw")
    assert kept[-2] == lines[-1]
    assert kept[0] in lines  # Cut at a line's start.


async def test_api_keys_reach_a_server_only_when_its_config_names_them(
    rigs, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-Abc123Def456Ghi789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-Xyz987Wvu654Tsr321")
    monkeypatch.setenv("CHATUI_SOMETHING_ELSE", "1")
    rig = rigs(
        stdio_config("plain", "standard", record.path),
        stdio_config("keyed", "standard", record.path, env_inherit=["OPENAI_API_KEY"]),
    )

    plain = set((await rig.text("plain", "env")).split("\n"))
    keyed = set((await rig.text("keyed", "env")).split("\n"))

    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CHATUI_SOMETHING_ELSE"}.isdisjoint(plain)
    assert {"PATH", "HOME", "CHATUI_TEST_RECORD"} <= plain
    assert keyed - plain == {"OPENAI_API_KEY"}


# Nothing left behind


@pytest.mark.parametrize("how", ["close", "kill_now"])
async def test_no_server_process_or_child_of_it_outlives_the_manager(
    rigs, record: Record, how: str
) -> None:
    rig = rigs(stdio_config("std", "standard", record.path))
    sleeper = marker()
    server = rig.server("std")
    await rig.call("std", "spawn_child", {"marker": sleeper})
    await until_running(sleeper, 1)
    group = server.pid

    if how == "close":
        await rig.manager.close()
    else:
        rig.manager.kill_now()

    await until(lambda: not living(sleeper) and not group_alive(group))
    if how == "close":
        assert server.status.state is ServerState.STOPPED


async def test_a_server_deaf_to_eof_and_sigterm_is_killed_on_close(rigs, record: Record) -> None:
    rig = rigs(stdio_config("deaf", "deaf", record.path))
    server = rig.server("deaf")
    await server.ready()
    pid = server.pid

    await server.close()

    assert record.find("stdin_closed")  # It was asked politely first...
    assert not alive(pid)  # ...then killed.
    assert server.status.state is ServerState.STOPPED


async def test_closing_stops_a_running_call_on_the_server_first(rigs, record: Record) -> None:
    rig = rigs(stdio_config("std", "standard", record.path))
    call = asyncio.create_task(rig.call("std", "slow", {"seconds": 600}, call_id="c1"))
    (started,) = await record.until(lambda: record.find("start", tool="slow"))

    await rig.manager.close()

    assert record.cancelled(started["rid"])
    assert record.find("handler_cancelled", rid=started["rid"])
    with pytest.raises(McpCallError) as failure:
        await call
    assert str(failure.value) == "The MCP server std was stopped during the call."
