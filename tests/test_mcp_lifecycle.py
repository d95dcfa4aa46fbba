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
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from chatui.cancel import CancelToken, current_token
from chatui.config import McpServerConfig
from chatui.mcp import server as mcp_server
from chatui.mcp.events import CancelSent, StatusChanged
from chatui.mcp.logs import KEEP_LOG_BYTES, MAX_LOG_BYTES, ServerLog
from chatui.mcp.server import CLOSE_WAIT, McpCallError
from chatui.mcp.status import ServerState
from chatui.mcp.stdio import NOT_JSON_RPC
from tests.support.clocks import LoopClock
from tests.support.mcp import (
    HttpServer,
    McpRig,
    Record,
    free_port,
    http_config,
    http_server,
    stdio_config,
    until,
)
from tests.support.mcp_servers import CHATTY_LINES
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


@pytest.fixture
def lingering_http(record: Record) -> Iterator[HttpServer]:
    with http_server("lingering", record.path) as server:
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


async def test_a_server_that_exits_at_start_has_its_last_words_in_the_reason(
    rigs, record: Record
) -> None:
    """What a server says as it gives up ("GITHUB_TOKEN is not set") is what the user needs."""
    rig = rigs(stdio_config("gh", "complain", record.path))
    server = rig.server("gh")
    with pytest.raises(McpCallError):
        await server.ready()

    status = server.status
    assert status.state is ServerState.FAILED
    assert status.reason.startswith("It exited with code 1. Its last words: ")
    assert "boom: GITHUB_TOKEN is not set" in status.reason
    assert "\x1b" not in status.reason and "[bold]see --help[/bold]" in status.reason


async def test_a_servers_refusal_is_a_one_line_reason_with_its_controls_visible(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("nope", "refuse", record.path))
    server = rig.server("nope")

    with pytest.raises(McpCallError) as failure:
        await server.ready()

    reason = server.status.reason
    assert reason == ("It refused the handshake: no ␛[31mway [b]bold[/b] log: /somewhere/else.log.")
    assert str(failure.value) == f"The MCP server nope could not start. {reason}"


async def test_a_key_in_a_servers_url_never_reaches_its_reason_or_its_log(rigs) -> None:
    key, token = "sk-proj-Abc123Def456Ghi789Jkl0", "ghp_Zyx987Wvu654Tsr321Qpo0"
    port = free_port()  # Nothing listens there.
    url = f"http://me:{token}@127.0.0.1:{port}/mcp/{key}?api_key={key}&plain=yes"
    rig = rigs(McpServerConfig(name="web", url=url))
    server = rig.server("web")

    with pytest.raises(McpCallError) as failure:
        await server.ready()

    reason = server.status.reason
    assert reason == (
        f"chatui could not reach it at http://127.0.0.1:{port}/mcp/***: "
        "All connection attempts failed."
    )
    assert str(failure.value) == f"The MCP server web could not start. {reason}"
    server.log.line(f"a record naming {url}")
    log = rig.log("web")
    assert "a record naming" in log
    for secret in (key, token):
        assert secret[8:16] not in log


async def test_an_http_server_refusing_the_token_is_said_so_and_the_token_never_shown(
    rigs, lingering_http: HttpServer
) -> None:
    token = "sk-proj-Abc123Def456Ghi789Jkl0"
    rig = rigs(http_config("web", lingering_http, headers={"Authorization": f"Bearer {token}"}))
    server = rig.server("web")

    with pytest.raises(McpCallError) as failure:
        await server.ready()

    reason = server.status.reason
    assert reason == (
        "It refused the handshake with HTTP 401 Unauthorized (check the token or key in its "
        "headers): Server returned an error response."
    )
    assert str(failure.value) == f"The MCP server web could not start. {reason}"
    sdk = rig.log_dir / "chatui.sdk.log"
    log = rig.log("web") + (sdk.read_text() if sdk.exists() else "")
    assert "401" in log  # What happened is in its log...
    assert token[8:16] not in log  # ...without the token.


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


async def test_a_turns_stop_cancels_the_running_request_in_the_stop_itself(
    rigs, record: Record
) -> None:
    """Esc's handler cancels the request itself: the cancellation does not wait for the
    tasks between the turn and the request (each would wait behind the stop's drawing)."""
    rig = rigs(stdio_config("std", "standard", record.path))
    server = rig.server("std")
    await server.ready()
    token = CancelToken()
    token.bind(asyncio.get_running_loop())

    async def turn() -> None:
        current_token.set(token)
        await rig.call("std", "slow", {"seconds": 600}, call_id="c1", progress=lambda _: None)

    call = asyncio.create_task(turn())
    (started,) = await record.until(lambda: record.find("start", tool="slow"))
    requests = list(server._calls)
    assert len(requests) == 1

    token.cancel()  # What Esc does; no step of any task runs before the check below.

    assert requests[0].cancelling() and not call.done()
    with pytest.raises(asyncio.CancelledError):
        await call
    await record.until(lambda: record.find("handler_cancelled", rid=started["rid"]))
    assert await rig.text("std", "echo", {"text": "next"}) == "next"


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


async def test_a_call_waiting_for_a_server_that_is_restarted_gets_the_new_runs_answer(
    rigs, record: Record
) -> None:
    config = stdio_config("stuck", "noinit", record.path)
    rig = rigs(config)
    call = asyncio.create_task(rig.call("stuck", "echo", {"text": "at last"}))
    (first,) = await record.until(lambda: record.find("request", method="initialize"))
    config.args = [*config.args[:-1], "late"]  # Its next run finishes its handshake.

    rig.manager.restart("stuck")  # The user restarts it from the list.

    assert texts(await call) == "at last"
    (echoed,) = record.find("start", tool="echo")
    assert echoed["pid"] != first["pid"]
    assert rig.states("stuck") == [
        ServerState.STARTING,
        ServerState.STOPPED,
        ServerState.STARTING,
        ServerState.READY,
    ]


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


async def test_a_connection_lost_after_the_start_reads_the_same_whichever_task_learns_it(
    rigs, standard_http: HttpServer
) -> None:
    """A race seen in CI: the SDK's transport, not the call, met the dead server first.

    Its error then made the reason "chatui could not reach it", a start's
    words, for a server that had been ready.
    """
    rig = rigs(http_config("web", standard_http))
    await rig.call("web", "echo", {"text": "ready"})
    server = rig.server("web")
    lost = BaseExceptionGroup(
        "the transport's tasks",
        [httpx2.RemoteProtocolError("Server disconnected without sending a response.")],
    )

    assert server._failure(lost, started=True) == "It closed the connection."
    assert server._failure(lost, started=False) == (
        f"chatui could not reach it at {standard_http.url}: "
        "Server disconnected without sending a response."
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


async def test_a_restart_of_a_server_that_never_answers_the_end_of_its_session_is_bounded(
    rigs, lingering_http: HttpServer, record: Record
) -> None:
    clock = LoopClock()
    rig = rigs(http_config("web", lingering_http))
    server = rig.server("web")
    await server.ready()

    rig.manager.restart("web")

    await record.until(lambda: record.find("delete"))  # It will never answer that.
    await clock.advance(CLOSE_WAIT + 1)
    await until(lambda: len(record.find("request", method="initialize")) == 2)
    await until(lambda: server.status.state is ServerState.READY)
    assert rig.states("web")[-3:] == [ServerState.STOPPED, ServerState.STARTING, ServerState.READY]


async def test_a_call_made_while_a_restart_closes_the_server_waits_for_the_new_run(
    rigs, lingering_http: HttpServer, record: Record
) -> None:
    clock = LoopClock()
    rig = rigs(http_config("web", lingering_http))
    server = rig.server("web")
    assert await rig.text("web", "echo", {"text": "first"}) == "first (lingering-1)"
    rig.manager.restart("web")
    await record.until(lambda: record.find("delete"))  # Its first session is ending.

    call = asyncio.create_task(rig.text("web", "echo", {"text": "second"}))
    await clock.advance(CLOSE_WAIT + 1)

    assert await call == "second (lingering-2)"
    assert server.status.state is ServerState.READY


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


async def test_a_server_that_says_its_tools_changed_after_each_listing_is_listed_at_a_pace(
    rigs, record: Record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp_server, "RELIST_INTERVAL", 600.0)  # Far longer than this test.
    clock = LoopClock()
    rig = rigs(stdio_config("restless", "restless", record.path))
    server = rig.server("restless")
    await server.ready()

    def listings() -> int:  # Each listing is two pages here.
        return len(record.find("request", method="tools/list"))

    for _ in range(3):  # Round trips, in which its "changed" after the listing is read.
        assert await rig.text("restless", "echo", {"text": "hi"}) == "hi"
    assert listings() == 2  # Not listed again yet...
    await clock.advance(601.0)
    await until(lambda: listings() == 4)  # ...but once the pace allows,
    for _ in range(3):
        assert await rig.text("restless", "echo", {"text": "hi"}) == "hi"
    assert listings() == 4  # and then not again before the next interval.
    assert server.status.state is ServerState.READY


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


async def test_a_server_flooding_its_stderr_never_grows_its_log_past_the_cap(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("chatty", "chatty", record.path))

    assert await rig.text("chatty", "echo", {"text": "still here"}) == "still here"
    await rig.manager.close()  # Its stderr is all in.

    log = rig.log_dir / "chatty.log"
    assert log.stat().st_size <= MAX_LOG_BYTES
    text = log.read_text()
    assert "stderr: chatty server started" in text  # The latest lines are kept...
    assert "chatter 000000000" not in text  # ...the oldest are gone...
    assert f"chatter {CHATTY_LINES - 1:09d} {'é' * 50}\n" in text
    assert "\ufffd" not in text  # ...and no character was cut in two between two reads.
    assert text.splitlines()[0].startswith(("stderr: ", "20", NOT_JSON_RPC, "..."))


async def test_a_flood_of_lines_that_are_not_messages_is_logged_in_brief(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("babbler", "babbler", record.path))

    assert await rig.text("babbler", "echo", {"text": "still here"}) == "still here"

    log = rig.log("babbler")
    stamp = r"(?:\S+ \S+ )?"  # The first line of each write has the time.
    shown = re.findall(rf"^{stamp}{NOT_JSON_RPC}: babble (\d+)$", log, re.MULTILINE)
    counted = re.findall(r"^\.\.\. and (\d+) more such lines, skipped$", log, re.MULTILINE)
    assert len(shown) + sum(map(int, counted)) == CHATTY_LINES  # Each is told of...
    assert len(shown) <= CHATTY_LINES // 10  # ...but only a few are written out.
    assert shown[:3] == ["0", "1", "2"]


def test_a_piece_of_stderr_of_many_lines_is_one_write_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ServerLog(tmp_path / "many.log")
    opened: list[Path] = []
    real_open = Path.open

    def counted(self: Path, *args, **kwargs):
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)

    log.stderr("x\n" * 10_000 + "and the start of a line")

    assert opened == [log.path]
    lines = log.path.read_text().splitlines()
    assert lines == ["stderr: x"] * 10_000
    log.end_of_stderr()
    assert log.path.read_text().splitlines()[-1] == "stderr: and the start of a line"


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


async def test_nothing_starts_a_server_again_once_the_manager_is_closed(
    rigs, record: Record
) -> None:
    rig = rigs(stdio_config("raw", "late", record.path))
    server = rig.server("raw")
    await server.ready()
    await rig.manager.close()

    rig.manager.restart("raw")  # Enter in the list while chatui quits, say.
    rig.manager.start()
    await asyncio.sleep(0)  # One turn of the loop: a restart's task would have started it.

    assert server.status.state is ServerState.STOPPED
    with pytest.raises(McpCallError) as failure:
        await rig.call("raw", "echo", {"text": "anyone?"})
    assert str(failure.value) == "The MCP server raw was stopped."
    assert len(record.find("request", method="initialize")) == 1


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
