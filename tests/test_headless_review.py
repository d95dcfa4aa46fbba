"""`chatui -p` as a shell user meets it: a terminal for stdin, a closed stderr.

Each test runs the real command as a subprocess (`tests.support.headless`)
against an OpenAI wire server of the test's, or none when nothing is sent.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

from chatui.messages import ToolResult
from tests.support.headless import ROOT, Headless, conversations, environment, remote_config
from tests.support.mcp_servers import RECORD_ENV
from tests.support.remote import Wire
from tests.support.wire import WireServer

BOUND = 60.0  # Seconds: a bound on a hang, not pacing.


def test_p_dash_on_a_terminal_says_to_type_the_prompt_and_end_it_with_ctrl_d(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer
) -> None:
    openai_server.play(openai.reply("Typed."))
    terminal, stdin = pty.openpty()
    chatui = Headless(["-p", "-"], openai_env, stdin=stdin)
    os.close(stdin)
    try:
        chatui.wait_for(lambda: "Ctrl+D" in chatui.stderr)
        assert not openai_server.requests  # It waits for the prompt.
        os.write(terminal, b"hello\n\x04")  # A line, then Ctrl+D at the start of the next.

        assert chatui.exit_code() == 0
        assert chatui.stdout == "Typed.\n"
        assert chatui.stderr.startswith("chatui: ") and chatui.stderr.count("\n") == 1
    finally:
        chatui.kill()
        os.close(terminal)


def test_a_piped_prompt_gets_no_typing_hint(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer
) -> None:
    openai_server.play(openai.reply("Piped."))
    chatui = Headless(["-p", "-"], openai_env, stdin=b"hello\n")
    try:
        assert chatui.exit_code() == 0
        assert (chatui.stdout, chatui.stderr) == ("Piped.\n", "")
    finally:
        chatui.kill()


def without_stderr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """chatui ARGS run with its stderr closed (`2>&-`), stdin empty."""
    command = " ".join(["exec", '"$0"', "-m", "chatui", *(f"'{arg}'" for arg in args), "2>&-"])
    return subprocess.run(
        ["sh", "-c", command, sys.executable],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        timeout=BOUND,
    )


def test_with_stderr_closed_an_error_never_lands_on_stdout(tmp_path: Path) -> None:
    env = environment(tmp_path, "")

    result = without_stderr(["-p", " "], env)

    assert (result.returncode, result.stdout) == (2, b"")


def test_with_stderr_closed_json_output_holds_only_json(tmp_path: Path) -> None:
    """A run that fails says why on stderr; with none, stdout still parses line by line."""
    env = environment(
        tmp_path, f'provider = "local"\n[local]\nmodel_path = "{tmp_path}/none.gguf"\n'
    )

    result = without_stderr(["--json", "-p", "Hello"], env)

    assert result.returncode == 1
    [end] = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert end["type"] == "end" and end["state"] == "failed" and "none.gguf" in end["error"]


def test_json_tells_of_the_cancelled_result_of_a_tool_stopped_by_sigint(
    tmp_path: Path, openai: Wire, openai_server: WireServer
) -> None:
    """Every tool_call gets its tool_result, as stored: here the stop's "cancelled"."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    started = tmp_path / "started"
    tools = f'[tools]\nenabled = ["shell"]\nworkspace = {json.dumps(str(workspace))}\n'
    env = environment(tmp_path, remote_config(openai, openai_server, tools))
    command = json.dumps({"command": f"touch {started}; sleep 60"})
    call = openai.call(0, "c1", "shell", command)
    openai_server.play([*openai.opening("Running."), *call, *openai.ending("tool_calls")])
    chatui = Headless(["--json", "--allow-tool", "shell", "-p", "Go"], env)
    try:
        chatui.wait_for(started.exists)  # The command runs.

        chatui.signal(signal.SIGINT)

        assert chatui.exit_code() == 130
    finally:
        chatui.kill()
    events = [json.loads(line) for line in chatui.stdout.splitlines()]
    assert [e["type"] for e in events] == ["start", "text", "tool_call", "tool_result", "end"]
    result = events[3]
    assert (result["id"], result["name"], result["state"]) == ("c1", "shell", "cancelled")
    assert events[4]["state"] == "interrupted"
    [stored] = [i for i in conversations(tmp_path)[0].items if isinstance(i, ToolResult)]
    assert (stored.call_id, stored.state, stored.content) == ("c1", "cancelled", result["content"])


def test_a_stop_before_the_request_says_only_the_prompt_is_stored(
    tmp_path: Path, openai: Wire, openai_server: WireServer
) -> None:
    """Stopped while an MCP server starts: nothing arrived, so nothing is "marked interrupted"."""
    record = tmp_path / "record.jsonl"
    mcp = (
        "[mcp.servers.slow]\n"
        f"command = {json.dumps(sys.executable)}\n"
        'args = ["-m", "tests.support.mcp_servers", "noinit"]\n'
        f"cwd = {json.dumps(str(ROOT))}\n"
        f"env = {{ {RECORD_ENV} = {json.dumps(str(record))} }}\n"
    )
    env = environment(tmp_path, remote_config(openai, openai_server) + mcp)
    chatui = Headless(["-p", "Hi"], env)
    try:
        chatui.wait_for(lambda: record.exists() and "initialize" in record.read_text())

        chatui.signal(signal.SIGINT)

        assert chatui.exit_code() == 130
    finally:
        chatui.kill()
    assert chatui.stderr == "chatui: Stopped before the request was sent; the prompt is stored.\n"
    assert openai_server.requests == []
    [conversation] = conversations(tmp_path)
    assert [getattr(i, "text", None) for i in conversation.items] == ["Hi"]
