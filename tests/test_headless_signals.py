"""A headless run stops as Esc stops a reply: on SIGINT, SIGTERM, or a stdout that was closed.

Each test runs the real `chatui -p` as a subprocess against a wire server
whose reply stalls at a known point (`STALL`, `Gate`), waits until chatui
has printed what came before it, then stops it: the server sees the
disconnect, the store holds the partial reply marked interrupted, and the
exit code says how it ended. Nothing is timed: every wait is on a condition.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from chatui.messages import ModelResponse, ResponseState, UserPrompt
from tests.support.headless import Headless, conversations, environment, remote_config
from tests.support.remote import Wire
from tests.support.wire import STALL, Gate, WireServer

STOPPED = "chatui: Stopped. What arrived is stored, marked interrupted.\n"
STOPS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
WOKEN = 30.0  # Seconds: a bound on a hang, half the idle timeout that would end it anyway.


@pytest.fixture
def env(tmp_path: Path, wire: Wire, server: WireServer) -> dict[str, str]:
    return environment(tmp_path, remote_config(wire, server))


def stored_reply(tmp_path: Path) -> tuple[list[str], ModelResponse]:
    """The one conversation's prompts, and its one reply."""
    [conversation] = conversations(tmp_path)
    prompts = [i.text for i in conversation.items if isinstance(i, UserPrompt)]
    [reply] = [i for i in conversation.items if isinstance(i, ModelResponse)]
    return prompts, reply


def disconnected(server: WireServer) -> bool:
    request = server.requests[0]
    return request.ended.wait(10) and request.disconnected


@pytest.mark.parametrize(("number", "code"), STOPS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_stream_stops_the_reply_stores_it_interrupted_and_exits_128_plus_it(
    env: dict[str, str],
    wire: Wire,
    server: WireServer,
    tmp_path: Path,
    number: signal.Signals,
    code: int,
) -> None:
    server.play([*wire.opening("Hello ", "wor", cut=True), STALL])
    chatui = Headless(["-p", "Hi"], env)
    try:
        chatui.wait_for(lambda: chatui.stdout == "Hello wor")  # Both chunks arrived.

        chatui.signal(number)

        assert chatui.exit_code() == code
    finally:
        chatui.kill()
    assert disconnected(server)  # The stream was closed for real.
    assert chatui.stdout == "Hello wor\n"  # What arrived, printed, its line ended.
    assert chatui.stderr == STOPPED
    prompts, reply = stored_reply(tmp_path)
    assert prompts == ["Hi"]
    assert reply.state is ResponseState.INTERRUPTED and reply.text == "Hello wor"
    assert reply.finish_reason == "cancelled"


def test_a_sigint_before_the_reply_begins_keeps_the_prompt_and_stops_the_request(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    server.play([STALL])  # The request arrives; nothing comes back.
    chatui = Headless(["-p", "Hi"], env)
    try:
        chatui.wait_for(lambda: server.requests)

        chatui.signal(signal.SIGINT)

        assert chatui.exit_code() == 130
    finally:
        chatui.kill()
    assert disconnected(server)
    assert (chatui.stdout, chatui.stderr) == ("", STOPPED)
    prompts, reply = stored_reply(tmp_path)
    assert prompts == ["Hi"] and reply.state is ResponseState.INTERRUPTED and reply.text == ""


def test_a_second_sigint_ends_the_run_at_once_without_a_traceback(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    """The first stop is held (closing the provider never ends); the second SIGINT ends it."""
    server.play([*wire.opening("Partial", cut=True), STALL])
    target = "tests.support.headless_target"
    chatui = Headless(["held-close", "-p", "Hi"], env, module=target)
    try:
        chatui.wait_for(lambda: chatui.stdout == "Partial")
        chatui.signal(signal.SIGINT)
        chatui.wait_for(lambda: "closing held" in chatui.stderr)  # The first stop is stuck.

        chatui.signal(signal.SIGINT)

        assert chatui.exit_code() == 130
    finally:
        chatui.kill()
    assert chatui.stderr == STOPPED + "closing held\n"  # No traceback.
    assert disconnected(server)
    _prompts, reply = stored_reply(tmp_path)
    assert reply.state is ResponseState.INTERRUPTED and reply.text == "Partial"


def test_a_closed_stdout_stops_the_run_as_a_signal_does_and_exits_141(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    """`chatui -p … | head -1`: the reader leaves after a line; the next write stops the run."""
    more = threading.Event()
    line_two = wire.rest("line two\n")[:1]  # One more delta of the same reply.
    server.play([*wire.opening("line one\n", cut=True), Gate(more), *line_two, STALL])
    chatui = Headless(["-p", "Hi"], env, read_stdout=False)
    try:
        assert chatui.head_line() == "line one\n"

        more.set()  # chatui writes "line two" to a pipe nobody reads.

        assert chatui.exit_code() == 141
    finally:
        chatui.kill()
    assert chatui.stderr == ""  # As `yes | head -1`: nothing said, no traceback.
    assert disconnected(server)
    _prompts, reply = stored_reply(tmp_path)
    assert reply.state is ResponseState.INTERRUPTED
    assert reply.text == "line one\nline two\n"


def test_a_sigint_the_kernel_hands_another_thread_still_stops_the_run(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    """The main thread sleeps in the event loop; the signal lands on another thread."""
    server.play([*wire.opening("Hello", cut=True), STALL])
    trigger = tmp_path / "trigger"
    target = "tests.support.headless_target"
    env = {**env, "CHATUI_TEST_TRIGGER": str(trigger)}
    chatui = Headless(["thread-sigint", "-p", "Hi"], env, module=target)
    try:
        chatui.wait_for(lambda: chatui.stdout == "Hello")

        trigger.touch()

        assert chatui.exit_code(timeout=WOKEN) == 130  # Not at the idle timeout, a minute on.
    finally:
        chatui.kill()
    assert disconnected(server) and chatui.stderr == STOPPED
    _prompts, reply = stored_reply(tmp_path)
    assert reply.state is ResponseState.INTERRUPTED and reply.text == "Hello"
