"""An API key never reaches the screen, the store or the model, whole or in part.

Keys arrive cut: a file or a command's output longer than the tool's limit
is cut with the key across the cut, and an error page longer than what is
shown of it is cut the same way. Each case below puts the key exactly
across a cut, so that cutting before redacting would leave its start (or
its end) behind. `leaks` looks for any run of 8 of the key's characters.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatui import redact
from chatui.config import ToolsConfig
from chatui.messages import ModelResponse, ResponseState, ToolResult
from chatui.providers.base import StreamEnd
from chatui.redact import MIN_FRAGMENT, Redactor
from chatui.store import Store
from chatui.tools.builtin import build_registry
from chatui.tools.protocol import Approval
from chatui.tools.registry import Tool, ToolRegistry
from chatui.turn import TurnSettings
from tests.support import openai_wire as ow
from tests.support.remote import SECRET, assert_no_secret, key_runs, openai_at, settings
from tests.support.scripted import ScriptedProvider, tool_call, words
from tests.support.turns import make_turn, stored
from tests.support.wire import WireServer

LIMIT = 400  # tools.output_limit in these tests.
OTHER_KEY = "sk-ant-api03-Zq8Lr2Xw5Vn9Tb3Hk7Jm1Pd6Fs4Gc0"


def leaks(text: str, key: str = SECRET) -> list[str]:
    """The runs of `MIN_FRAGMENT` characters of `key` that occur in `text`."""
    runs = {key[i : i + MIN_FRAGMENT] for i in range(len(key) - MIN_FRAGMENT + 1)}
    return sorted(run for run in runs if run in text)


async def approve(call: object) -> Approval:
    return Approval.ONCE


async def run_tool(store: Store, workspace: Path, name: str, arguments: str) -> ToolResult:
    config = ToolsConfig(enabled=[name], output_limit=LIMIT)
    reply = [*tool_call(0, "c1", name, [arguments]), StreamEnd("tool_calls")]
    provider = ScriptedProvider(reply, words("Seen."))
    turn, sink = make_turn(
        store,
        provider,
        tools=build_registry(config, workspace=workspace),
        settings=TurnSettings(secrets=[SECRET, OTHER_KEY]),
        approve=approve,
    )
    await turn.run()
    (result,) = [i for i in stored(store, turn) if isinstance(i, ToolResult)]
    shown = [e.payload.result.content for e in sink.events if hasattr(e.payload, "result")]
    assert shown == [result.content]  # What the screen got is what was stored,
    sent = repr(provider.records[1].request.messages)
    assert result.content in sent or result.content.replace("\n", "\\n") in sent  # and sent.
    return result


@pytest.mark.parametrize("before", [LIMIT - 30, LIMIT - 1, LIMIT - MIN_FRAGMENT])
async def test_a_key_across_the_cut_of_a_file_never_leaves_part_of_itself(
    store: Store, tmp_path: Path, before: int
) -> None:
    name = "OPENAI_API_KEY="  # The key starts at `before`: the cut is `LIMIT`.
    (tmp_path / ".env").write_text("x" * (before - len(name)) + f"{name}{SECRET}\n" + "y" * 5000)

    result = await run_tool(store, tmp_path, "read_file", '{"path": ".env"}')

    assert result.state == "ok"
    assert "cut: the file has" in result.content  # The cut happened,
    assert leaks(result.content) == []  # and no part of the key is left of it.


@pytest.mark.parametrize("where", ["head", "tail"])
async def test_a_key_across_the_cut_of_a_commands_output_never_leaves_part_of_itself(
    store: Store, tmp_path: Path, where: str
) -> None:
    half = LIMIT // 2
    if where == "head":  # The key starts 30 characters before the head's end.
        script = f"printf '%{half - 30}s' ''; printf '{SECRET}'; printf '%5000s' ''"
    else:  # The key ends 20 characters into the tail that is kept.
        script = f"printf '%5000s' ''; printf '{SECRET}'; printf '%{half - 20}s' ''"
    (tmp_path / "run.sh").write_text(script)

    result = await run_tool(store, tmp_path, "shell", '{"command": "sh run.sh"}')

    assert "bytes of output cut" in result.content
    assert leaks(result.content) == []
    assert "***" in result.content  # It was there, and redacted.


async def test_both_keys_are_redacted_whatever_the_provider(store: Store, tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"a={SECRET}\nb={OTHER_KEY}\nc={OTHER_KEY[:20]}\n")

    result = await run_tool(store, tmp_path, "read_file", '{"path": "keys.txt"}')

    assert result.content == "a=***\nb=***\nc=***\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Bearer {SECRET}.", "Bearer ***."),
        (f"Bearer {SECRET[:30]}</html>", "Bearer ***</html>"),  # Cut upstream: its start.
        (f"…{SECRET[-12:]} tail", "…*** tail"),  # Its end.
        (f"[{SECRET[5:25]}]", "[***]"),  # Its middle.
        (f"{SECRET}{SECRET}", "***"),  # Touching runs are one mask.
        (f"{SECRET[: MIN_FRAGMENT - 1]} is not enough of it", None),  # Shorter: kept.
        ("nothing here", None),
    ],
)
def test_a_redactor_masks_every_long_run_of_a_key(text: str, expected: str | None) -> None:
    assert Redactor([SECRET])(text) == (text if expected is None else expected)


@pytest.mark.parametrize(
    "echo",
    [
        "Incorrect API key provided: sk-test-{stars}{tail}. You can find your API key",
        "key sk-…{stars}…{tail}",  # An ellipsis between the stars and the end.
    ],
)
def test_a_servers_masked_echo_of_the_key_loses_the_end_it_shows(echo: str) -> None:
    """OpenAI's 401 shows a key's last 4 characters after stars; they reached stderr."""
    text = echo.format(stars="*" * 40, tail=SECRET[-4:])

    shown = Redactor([SECRET])(text)

    assert SECRET[-4:] not in shown and "***" in shown
    assert Redactor([SECRET])(f"**** {SECRET[-4:]}x") == f"**** {SECRET[-4:]}x"  # Not an end.


def test_a_redactor_with_no_keys_changes_nothing() -> None:
    assert Redactor([])("sk-anything at all") == "sk-anything at all"
    assert Redactor(["", ""])("x") == "x"


async def test_every_tool_cuts_with_the_turns_keys_known(store: Store) -> None:
    """Sync tools run on a thread of their own, async ones in a task: both see the keys."""

    def sync_margin() -> str:
        """How far past a cut this tool must read."""
        return str(redact.margin())

    async def async_margin() -> str:
        """How far past a cut this tool must read."""
        return str(redact.margin())

    reply = [
        *tool_call(0, "c1", "sync_margin", ["{}"]),
        *tool_call(1, "c2", "async_margin", ["{}"]),
        StreamEnd("tool_calls"),
    ]
    provider = ScriptedProvider(reply, words("Seen."))
    registry = ToolRegistry([Tool(sync_margin), Tool(async_margin)])
    turn, _ = make_turn(
        store, provider, tools=registry, settings=TurnSettings(secrets=[SECRET, OTHER_KEY])
    )
    await turn.run()

    results = {i.name: i.content for i in stored(store, turn) if isinstance(i, ToolResult)}
    assert results == {"sync_margin": str(len(OTHER_KEY)), "async_margin": str(len(OTHER_KEY))}


def test_a_placeholder_key_is_masked_whole_and_its_words_stay() -> None:
    """llama.cpp server's docs use "sk-no-key-required": "required" is everyday text."""
    redactor = Redactor(["sk-no-key-required"])

    assert redactor('{"required": ["path"]}') == '{"required": ["path"]}'
    assert redactor("key sk-no-key-required.") == "key ***."


async def test_a_cut_output_of_wide_characters_shows_at_most_the_limit_in_bytes(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "run.sh").write_text("for i in $(seq 2000); do printf 'é'; done")

    result = await run_tool(store, tmp_path, "shell", '{"command": "sh run.sh"}')

    head, cut, tail = result.content.partition("\n[… ")
    shown = head.encode() + tail.partition(" …]\n")[2].partition("\n[exit code")[0].encode()
    assert len(shown) <= LIMIT
    assert set(head) == {"é"} and cut  # Whole characters only, at both ends.
    assert f"{4000 - LIMIT:,} bytes of output cut" in result.content


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 100])
async def test_a_key_a_server_echoes_into_the_reply_never_shows_is_stored_or_sent_back(
    store: Store, size: int
) -> None:
    """The answer, its reasoning and a call's arguments, the key streamed `size` characters
    at a time: nothing of it reaches the screen (the sink), the store or the next request."""
    said = f"Your key is {SECRET}, and so on."
    first = [
        *ow.reasoning(*pieces(f"I see {SECRET}.", size)),
        *ow.text(*pieces(said, size)),
        *ow.tool_call(0, "c1", "note", *pieces(json.dumps({"text": SECRET}), size)),
        *ow.ending("tool_calls"),
    ]

    def note(text: str) -> str:
        """Take a note."""
        return "noted"

    with WireServer() as server:
        server.play(first, ow.reply("Done."))
        provider = openai_at(server.base_url)
        turn, sink = make_turn(
            store, provider, tools=ToolRegistry([Tool(note)]), settings=settings()
        )
        outcome = await turn.run()
        await provider.close()
        sent = server.wait_for_request(2).body

    assert outcome.state is ResponseState.COMPLETE
    shown = "".join(
        getattr(e.payload, "text", "") or getattr(e.payload, "arguments", "") for e in sink.events
    )
    assert "Your key is ***, and so on." in shown and key_runs(shown) == []
    assert_no_secret(store)
    assert key_runs(json.dumps(sent)) == []
    response = next(i for i in stored(store, turn) if isinstance(i, ModelResponse))
    assert response.text == "Your key is ***, and so on."
    assert response.tool_calls[0].arguments == '{"text": "***"}'


async def test_text_that_only_looks_like_a_keys_start_is_shown_whole(store: Store) -> None:
    """Held back while it could begin a key, then shown as it was: nothing lost, in order."""
    provider = ScriptedProvider(words("Ask sk- or s then sk-test- and stop s"))
    turn, sink = make_turn(store, provider, settings=settings())

    await turn.run()

    assert "".join(sink.texts) == "Ask sk- or s then sk-test- and stop s"
    assert stored(store, turn)[1].text == "Ask sk- or s then sk-test- and stop s"
