"""`chatui -p`, `-p -` and a prompt piped in: the reply on stdout, stored as in the app.

Each test runs the real command as a subprocess (`tests.support.headless`)
against a wire server of the test's (the real SDKs) or the tiny GGUF, then
reads what it printed and what it stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatui.messages import ModelRef, ModelResponse, ResponseState, ToolResult, UserPrompt
from chatui.sanitize import visible
from chatui.store import Store
from tests.support.headless import (
    ROOT,
    Headless,
    conversations,
    db_path,
    environment,
    local_config_toml,
    remote_config,
    run,
)
from tests.support.mcp_servers import RECORD_ENV
from tests.support.processes import alive
from tests.support.remote import SECRET, AnthropicWire, OpenAIWire, Wire
from tests.support.wire import Error, WireServer

HOSTILE = "\x1b]0;owned\x07\x1b[2J"  # A title change and a screen clear, from the model.


def replies(item_list: list[Any]) -> list[ModelResponse]:
    return [item for item in item_list if isinstance(item, ModelResponse)]


def prompts(item_list: list[Any]) -> list[str]:
    return [item.text for item in item_list if isinstance(item, UserPrompt)]


def user_texts(wire: Wire, body: dict[str, Any]) -> list[str]:
    _system, messages = wire.prompt_of(body)
    return [wire.text_of(m) for m in messages if m["role"] == "user"]


@pytest.fixture
def env(tmp_path: Path, wire: Wire, server: WireServer) -> dict[str, str]:
    """chatui on `wire`'s API at `server`: a test that asks for it runs on both APIs."""
    return environment(tmp_path, remote_config(wire, server))


def test_p_prints_the_reply_as_plain_text_and_stores_it_as_the_app_does(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    server.play(wire.reply("Hello, ", f"**world**{HOSTILE}", "."))

    code, out, err = run(["-p", "Say hello"], env)

    assert (code, err) == (0, "")
    # Markdown as written; the model's control characters shown, never acted on.
    assert out == f"Hello, **world**{visible(HOSTILE)}.\n"
    assert "\x1b" not in out and "\x07" not in out
    assert user_texts(wire, server.requests[0].body) == ["Say hello"]
    [conversation] = conversations(tmp_path)
    assert conversation.title == "Say hello"
    assert prompts(conversation.items) == ["Say hello"]
    [reply] = replies(conversation.items)
    assert reply.state is ResponseState.COMPLETE
    assert reply.text == f"Hello, **world**{HOSTILE}."
    assert (reply.provider, reply.model) == (wire.name, "wire-model")


def test_p_runs_on_the_local_model(tiny_model: Path, tmp_path: Path) -> None:
    env = environment(tmp_path, local_config_toml(tiny_model, max_tokens=8))

    code, out, err = run(["-p", "Hello"], env)

    assert (code, err) == (0, "")
    [conversation] = conversations(tmp_path)
    [reply] = replies(conversation.items)
    assert reply.state is ResponseState.COMPLETE and reply.text
    assert reply.provider == "local"
    end = "" if reply.text.endswith("\n") else "\n"
    assert out == visible(reply.text) + end  # Whatever bytes the random weights chose.


def test_p_dash_reads_the_prompt_from_stdin(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer, tmp_path: Path
) -> None:
    openai_server.play(openai.reply("Read it."))

    code, out, _err = run(["-p", "-"], openai_env, stdin=b"line one\nline two\n")

    assert (code, out) == (0, "Read it.\n")
    assert user_texts(openai, openai_server.requests[0].body) == ["line one\nline two"]
    assert prompts(conversations(tmp_path)[0].items) == ["line one\nline two"]


def test_a_prompt_piped_in_without_p_is_answered_without_the_ui(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer, tmp_path: Path
) -> None:
    """`echo hi | chatui`: no terminal is needed, the piped text is the prompt."""
    openai_server.play(openai.reply("Hi there."))

    code, out, err = run([], openai_env, stdin=b"hi\n")

    assert (code, out, err) == (0, "Hi there.\n", "")
    assert prompts(conversations(tmp_path)[0].items) == ["hi"]


@pytest.mark.parametrize("stdin", [b"", b" \n\n"])
def test_an_empty_prompt_is_refused_and_nothing_is_sent(
    openai_env: dict[str, str], openai_server: WireServer, tmp_path: Path, stdin: bytes
) -> None:
    code, out, err = run(["-p", "-"], openai_env, stdin=stdin)

    assert (code, out) == (2, "")
    assert err == "chatui: The prompt is empty: give one with -p PROMPT, or pipe it in.\n"
    assert openai_server.requests == [] and conversations(tmp_path) == []


def test_continue_goes_on_with_the_last_conversation_that_holds_one(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer, tmp_path: Path
) -> None:
    openai_server.play(openai.reply("First answer."), openai.reply("Second answer."))
    assert run(["-p", "First"], openai_env)[0] == 0
    store = Store(db_path(tmp_path))
    store.create_conversation()  # Newer, and empty: what the app opens at each start.
    store.close()

    code, out, _err = run(["--continue", "-p", "Second"], openai_env)

    assert (code, out) == (0, "Second answer.\n")
    assert user_texts(openai, openai_server.requests[1].body) == ["First", "Second"]
    held = [c for c in conversations(tmp_path) if c.items]
    assert len(held) == 1 and prompts(held[0].items) == ["First", "Second"]
    assert [r.text for r in replies(held[0].items)] == ["First answer.", "Second answer."]


def test_resume_goes_on_with_the_conversation_named_by_its_id_or_a_prefix(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer, tmp_path: Path
) -> None:
    openai_server.play(*(openai.reply(text) for text in ("A.", "B.", "A again.", "A 3.")))
    run(["-p", "In A"], openai_env)
    run(["-p", "In B"], openai_env)
    by_prompt = {prompts(c.items)[0]: c.id for c in conversations(tmp_path)}
    first = by_prompt["In A"]

    assert run(["--resume", first, "-p", "Back in A"], openai_env)[:2] == (0, "A again.\n")
    assert run(["--resume", first[:8], "-p", "Prefix"], openai_env)[:2] == (0, "A 3.\n")

    assert user_texts(openai, openai_server.requests[3].body) == ["In A", "Back in A", "Prefix"]
    stored = {c.id: prompts(c.items) for c in conversations(tmp_path)}
    assert stored == {first: ["In A", "Back in A", "Prefix"], by_prompt["In B"]: ["In B"]}


def test_an_unknown_resume_id_is_an_error_and_nothing_is_sent(
    openai_env: dict[str, str], openai_server: WireServer, tmp_path: Path
) -> None:
    code, out, err = run(["--resume", "0123456789abcdef", "-p", "Hello"], openai_env)

    assert (code, out) == (2, "")
    assert err.startswith("chatui: No conversation has the id 0123456789abcdef")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert openai_server.requests == [] and conversations(tmp_path) == []


@pytest.mark.parametrize("given", ["", "3", "abc"])
def test_a_resume_id_too_short_to_pick_one_is_said_so_not_unknown(
    given: str, openai_env: dict[str, str], openai_server: WireServer, tmp_path: Path
) -> None:
    code, out, err = run(["--resume", given, "-p", "Hello"], openai_env)

    assert (code, out) == (2, "")
    assert "first 4 characters" in err and "No conversation has the id" not in err
    assert (f"({given} is too short)" in err) == bool(given)
    assert openai_server.requests == [] and conversations(tmp_path) == []


def test_continue_with_no_conversation_yet_is_an_error(openai_env: dict[str, str]) -> None:
    code, _out, err = run(["--continue", "-p", "Hello"], openai_env)

    assert code == 2 and "no conversation to continue" in err


def test_a_conversation_open_in_another_chatui_is_refused(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer, tmp_path: Path
) -> None:
    openai_server.play(openai.reply("A."))
    run(["-p", "Mine"], openai_env)
    [conversation] = conversations(tmp_path)
    other = Store(db_path(tmp_path))  # Another chatui, running, with it open.
    assert other.claim_conversation(conversation.id)
    try:
        code, _out, err = run(["--resume", conversation.id, "-p", "Hello"], openai_env)
    finally:
        other.close()

    assert code == 2
    assert err == "chatui: That conversation is open in another chatui; close it there first.\n"
    assert len(openai_server.requests) == 1


def test_json_writes_one_object_per_event(tmp_path: Path, wire: Wire, server: WireServer) -> None:
    env = environment(tmp_path, remote_config(wire, server, '[tools]\nenabled = ["calculate"]'))
    server.play(
        [
            *wire.opening("Let me ", "work it out."),
            *wire.call(0, "call_1", "calculate", '{"expression"', ': "6*7"}'),
            *wire.ending("tool_calls"),
        ],
        wire.reply(f"It is 42{HOSTILE}.", input_tokens=30, output_tokens=7),
    )

    code, out, err = run(["--json", "-p", "What is 6*7?"], env)

    assert (code, err) == (0, "")
    assert out.isascii() and "\x1b" not in out  # Inert on a terminal, whatever it holds.
    events = [json.loads(line) for line in out.splitlines()]
    [conversation] = conversations(tmp_path)
    first, result = conversation.items[1], conversation.items[2]
    assert isinstance(first, ModelResponse) and isinstance(result, ToolResult)
    call = first.tool_calls[0]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert events[0] == {
        "type": "start",
        "conversation": conversation.id,
        "provider": wire.name,
        "model": "wire-model",
    }
    texts = "".join(e["text"] for e in events if e["type"] == "text")
    assert texts == f"Let me work it out.It is 42{HOSTILE}."
    [tool_call] = [e for e in events if e["type"] == "tool_call"]
    assert tool_call == {
        "type": "tool_call",
        "id": call.id,
        "name": "calculate",
        "arguments": '{"expression": "6*7"}',
    }
    [tool_result] = [e for e in events if e["type"] == "tool_result"]
    assert tool_result == {
        "type": "tool_result",
        "id": call.id,
        "name": "calculate",
        "state": "ok",
        "content": "42",
    }
    assert kinds.index("tool_call") < kinds.index("tool_result") < len(kinds) - 2
    assert events[-1] == {
        "type": "end",
        "state": "complete",
        "finish_reason": "stop",
        "error": None,
        "usage": {"input_tokens": 40, "output_tokens": 12, "estimated": False},
        "conversation": conversation.id,
    }


def test_a_tool_that_asks_first_is_denied_unless_allow_tool_names_it(
    tmp_path: Path, wire: Wire, server: WireServer
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("the secret plan")
    tools = f'[tools]\nenabled = ["read_file"]\nworkspace = {json.dumps(str(workspace))}\n'
    env = environment(tmp_path, remote_config(wire, server, tools))
    asks = [
        *wire.opening("Reading."),
        *wire.call(0, "call_1", "read_file", '{"path": "notes.txt"}'),
        *wire.ending("tool_calls"),
    ]
    server.play(asks, wire.reply("Could not."), asks, wire.reply("Done."))

    denied = run(["-p", "Read notes.txt"], env)
    allowed = run(["--allow-tool", "read_file", "-p", "Read notes.txt"], env)

    assert denied[:2] == (0, "Reading.\n\nCould not.\n")  # Each reply a paragraph.
    assert allowed[:2] == (0, "Reading.\n\nDone.\n")
    assert "read_file was denied: run with --allow-tool read_file to allow it." in denied[2]
    assert allowed[2] == ""
    by_prompt = conversations(tmp_path)
    results = [[i for i in c.items if isinstance(i, ToolResult)] for c in reversed(by_prompt)]
    assert [(r.state, r.content) for [r] in results] == [
        (
            "denied",
            "Denied: read_file needs the user's approval and this run cannot ask for it. "
            "Run chatui with --allow-tool read_file to allow it.",
        ),
        ("ok", "the secret plan"),
    ]
    # The model is told so: the result is what the next request sent.
    sent = [json.dumps(server.requests[n].body) for n in (1, 3)]
    assert "--allow-tool read_file" in sent[0] and "the secret plan" not in sent[0]
    assert "the secret plan" in sent[1]


def test_a_provider_error_fails_the_run_with_a_sentence_and_exit_1(
    env: dict[str, str], wire: Wire, server: WireServer, tmp_path: Path
) -> None:
    server.play([*wire.opening("Half"), wire.error_event({"type": "api_error", "message": "boom"})])

    code, out, err = run(["-p", "Hello"], env)

    assert code == 1 and out == "Half\n"
    assert err.startswith("chatui: ") and "Traceback" not in err and SECRET[-8:] not in err
    [reply] = replies(conversations(tmp_path)[0].items)
    assert reply.state is ResponseState.FAILED and reply.text == "Half"


def test_no_provider_fails_the_run_before_anything_is_stored(tmp_path: Path) -> None:
    env = environment(
        tmp_path, f'provider = "local"\n[local]\nmodel_path = "{tmp_path}/none.gguf"\n'
    )

    code, out, err = run(["-p", "Hello"], env)

    assert (code, out) == (1, "")
    assert err.startswith("chatui: ") and "none.gguf" in err and "Traceback" not in err
    assert conversations(tmp_path) == []


def test_a_headless_run_imports_no_ui_library(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer
) -> None:
    openai_server.play(openai.reply("Fine."))
    target = "tests.support.headless_target"
    chatui = Headless(["modules", "-p", "Hello"], openai_env, module=target)

    assert chatui.exit_code() == 0
    assert chatui.stdout == "Fine.\n"
    assert chatui.stderr == "loaded:\n"


def test_resume_in_the_app_with_an_unknown_id_is_an_error_before_any_ui(
    openai_env: dict[str, str],
) -> None:
    """On a terminal: exit 2 and one sentence, before the full-screen UI starts."""
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chatui", "--resume", "feedface"],
            stdin=terminal,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=openai_env,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)

    assert result.returncode == 2
    assert result.stderr.decode().startswith("chatui: No conversation has the id feedface")


def test_mcp_servers_are_started_first_and_their_tools_obey_allow_tool(
    tmp_path: Path, openai: Wire, openai_server: WireServer
) -> None:
    """The first request offers the server's tools; a tool that asks runs only when allowed."""
    record = tmp_path / "record.jsonl"
    mcp = (
        "[mcp.servers.t]\n"
        f"command = {json.dumps(sys.executable)}\n"
        'args = ["-m", "tests.support.mcp_servers", "standard"]\n'
        f"cwd = {json.dumps(str(ROOT))}\n"
        f"env = {{ {RECORD_ENV} = {json.dumps(str(record))} }}\n"
    )
    config = remote_config(openai, openai_server, "[tools]\nenabled = []\n") + mcp
    env = environment(tmp_path, config)
    call = [*openai.call(0, "call_1", "t__echo", '{"text": "pong"}'), *openai.ending("tool_calls")]
    openai_server.play(call, openai.reply("Denied."), call, openai.reply("Echoed."))

    denied = run(["-p", "Echo pong"], env)
    allowed = run(["--allow-tool", "t__echo", "-p", "Echo pong"], env)

    assert denied[:2] == (0, "Denied.\n") and allowed[:2] == (0, "Echoed.\n")
    assert "t__echo was denied: run with --allow-tool t__echo to allow it." in denied[2]
    for first in (openai_server.requests[0], openai_server.requests[2]):
        assert "t__echo" in [tool["function"]["name"] for tool in first.body["tools"]]
    results = [
        [(i.state, i.content) for i in c.items if isinstance(i, ToolResult)]
        for c in reversed(conversations(tmp_path))
    ]
    assert results[0][0][0] == "denied" and results[1] == [("ok", "pong")]
    events = [json.loads(line) for line in record.read_text().splitlines()]
    assert [e["tool"] for e in events if e["ev"] == "start"] == ["echo"]  # Once: when allowed.
    assert not any(alive(pid) for pid in {e["pid"] for e in events})  # None outlives chatui.


def test_a_resumed_conversation_answers_with_its_own_model_unless_one_is_named(
    tmp_path: Path,
) -> None:
    openai, anthropic = OpenAIWire(), AnthropicWire()
    with openai.serve() as gpt, anthropic.serve() as claude:
        config = remote_config(openai, gpt) + (
            f'[anthropic]\napi_key = "{SECRET}"\nbase_url = "{claude.base_url}"\n'
        )
        env = environment(tmp_path, config)
        gpt.play(openai.reply("From GPT."), openai.reply("GPT again."))
        claude.play(anthropic.reply("From Claude."))
        run(["-p", "Hi"], env)
        [conversation] = conversations(tmp_path)
        store = Store(db_path(tmp_path))
        store.set_model(conversation.id, ModelRef("anthropic", "claude-own"))
        store.close()

        own = run(["--resume", conversation.id, "-p", "Who are you?"], env)
        named = run(["--resume", conversation.id, "--provider", "openai", "-p", "And now?"], env)

    assert own[:2] == (0, "From Claude.\n") and named[:2] == (0, "GPT again.\n")
    assert [r.body["model"] for r in claude.requests] == ["claude-own"]
    assert len(gpt.requests) == 2
    [after] = conversations(tmp_path)
    assert [(r.provider, r.text) for r in replies(after.items)] == [
        ("openai", "From GPT."),
        ("anthropic", "From Claude."),
        ("openai", "GPT again."),
    ]
    assert after.model is not None and after.model.provider == "openai"  # Named: now its own.


def test_json_ends_with_the_failure_when_the_reply_fails(
    openai_env: dict[str, str], openai: Wire, openai_server: WireServer
) -> None:
    openai_server.play([Error(400, openai.error_body("invalid_request_error", "No such model."))])

    code, out, err = run(["--json", "-p", "Hello"], openai_env)

    events = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [e["type"] for e in events] == ["start", "end"]
    end = events[-1]
    assert (end["state"], end["finish_reason"]) == ("failed", "error")
    assert end["error"] and err == f"chatui: {end['error']}\n"
