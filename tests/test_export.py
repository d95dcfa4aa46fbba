"""Export: a conversation as Markdown and as JSON, from the shell and from the palette.

`sample()` is a conversation with every part kind; its exports are compared
with `tests/data/export_expected.md` and `.json`, files made by
`to_markdown` and `to_json` and read by eye. After an intended change of the
format, write them again (`python -c "from tests.test_export import
write_expected; write_expected()"`) and read the diff before committing.
The command runs as a real subprocess on a real store; the palette entry
through Pilot.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token
from textual.command import CommandList, CommandPalette

from chatui.export import file_stem, to_json, to_markdown, write_new_file
from chatui.messages import (
    Attachment,
    BranchOrigin,
    Conversation,
    Item,
    ModelRef,
    ModelResponse,
    ResponseState,
    TextPart,
    ThinkingPart,
    Timings,
    ToolCallPart,
    ToolResult,
    Usage,
    UserPrompt,
    item_from_dict,
    item_to_dict,
)
from chatui.store import CRASH_NOTE, Store
from tests.support.app import make_app, screen_text, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, words

DATA = Path(__file__).resolve().parent / "data"
EXPECTED_MD = DATA / "export_expected.md"
EXPECTED_JSON = DATA / "export_expected.json"
BOUND = 60.0  # Seconds: a bound on a hang, not pacing.
RENDERED = MarkdownIt("commonmark")  # As a reader's viewer parses it: HTML on.


def reply(n: str, provider: str, model: str, *parts: Any, **fields: Any) -> ModelResponse:
    response = ModelResponse(provider, model, list(parts), id=n, **fields)
    response.usage = Usage(120, 48)
    response.timings = Timings(started=10.0, first_token=10.4, last_token=11.9, ended=12.0)
    return response


def sample() -> Conversation:
    """A conversation with every part kind, versions, a fork's origin and its own settings."""
    call = ToolCallPart
    stored: list[tuple[Item, str | None]] = []

    def add(item: Item, parent: str | None) -> None:
        stored.append((item, parent))

    add(UserPrompt("Plan a day in Porto.", id="p0"), None)
    add(
        reply(
            "r0", "local", "gemma-3-270m", TextPart("Porto is hilly."), state=ResponseState.COMPLETE
        ),
        "p0",
    )
    add(UserPrompt("Plan a day in **Lisbon**, from the time there.", id="p1"), None)
    add(
        reply(
            "r1",
            "anthropic",
            "claude-sonnet-4-5",
            ThinkingPart("The user wants a day plan. I check the time first.", signature="sig-1"),
            ThinkingPart(data="RW5jcnlwdGVkIHJlYXNvbmluZw=="),
            TextPart("Let me check the time there, and the budget."),
            call("call_time", "current_datetime", '{"timezone":"Europe/Lisbon"}', True),
            call("call_calc", "calculate", '{"expression": "3 * 25 +"}', True),
            state=ResponseState.COMPLETE,
            finish_reason="tool_calls",
        ),
        "p1",
    )
    add(ToolResult("call_time", "current_datetime", "2025-05-01 14:05, Thursday", id="t1"), "r1")
    add(
        ToolResult("call_calc", "calculate", "The expression ends after '+'.", "error", id="t2"),
        "t1",
    )
    plan = (
        "It is just past 2 pm. A plan:\n\n"
        "1. **Afternoon**: tram 28 up to Alfama.\n"
        "2. **Evening**: dinner in Bairro Alto.\n\n"
        "```python\nbudget = 3 * 25 + 40  # euros\n```\n\n"
        "Let me look at your photos and a map."
    )
    add(
        reply(
            "r2",
            "openai",
            "gpt-4o-mini",
            TextPart(plan),
            call("call_shell", "shell", '{"command": "ls ~/Pictures"}', True),
            call("call_map", "maps__render", '{"place": "Alfama", "zoom": 15}', True),
            call("call_read", "read_file", '{"path": "notes/lisbon.md"}', True),
            state=ResponseState.COMPLETE,
            finish_reason="tool_calls",
        ),
        "t2",
    )
    add(
        ToolResult("call_shell", "shell", "The user denied this tool call.", "denied", id="t3"),
        "r2",
    )
    attachments = [
        Attachment("image/png", 48_213, "iVBORw0KGgo="),
        Attachment("audio/mpeg", 2_400_000),
    ]
    add(
        ToolResult(
            "call_map",
            "maps__render",
            "[image/png, 48.2 kB]\n[audio/mpeg, 2.4 MB]\nAlfama at zoom 15.",
            id="t4",
            attachments=attachments,
            structured={"place": "Alfama", "zoom": 15},
        ),
        "t3",
    )
    add(
        ToolResult(
            "call_read",
            "read_file",
            "The tool call was cancelled by the user before it finished.",
            "cancelled",
            id="t5",
        ),
        "t4",
    )
    add(UserPrompt("What is in my notes?", id="p2"), "t5")
    add(
        reply(
            "r3",
            "local",
            "gemma-3-270m",
            TextPart("Your notes say"),
            call("call_cut", "read_file", '{"path": "no', False),
            state=ResponseState.INTERRUPTED,
            finish_reason="cancelled",
            error=CRASH_NOTE,
        ),
        "p2",
    )
    add(UserPrompt("Where should we eat?", id="p3"), "r3")
    add(
        reply(
            "r4a",
            "openai",
            "gpt-4o-mini",
            TextPart("Try Cervejaria Ramiro."),
            state=ResponseState.COMPLETE,
        ),
        "p3",
    )
    add(
        reply(
            "r4b",
            "anthropic",
            "claude-sonnet-4-5",
            TextPart("Near the river, there"),
            state=ResponseState.FAILED,
            finish_reason="error",
            error="Anthropic is overloaded (529). Try again in a moment.",
        ),
        "p3",
    )
    add(UserPrompt("And a poem about it?", id="p4"), "r4b")
    add(
        reply(
            "r5",
            "openai",
            "gpt-4o-mini",
            TextPart("Yellow trams climb,\nthe river keeps the light,\nand the"),
            state=ResponseState.COMPLETE,
            finish_reason="length",
            continued=1,
        ),
        "p4",
    )
    return Conversation.from_tree(
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "A day in Lisbon",
        stored,
        "r5",
        view_start="p2",
        branched_from=BranchOrigin("aa11bb22cc33dd44ee55ff6677889900", "Trips"),
        system_prompt="Answer briefly.",
        model=ModelRef("openai", "gpt-4o-mini"),
    )


def write_expected() -> None:
    """Write the expected files from `sample()` (after an intended change of the format)."""
    EXPECTED_MD.write_text(to_markdown(sample()), encoding="utf-8")
    EXPECTED_JSON.write_text(to_json(sample()), encoding="utf-8")


def rebuilt(document: dict[str, Any]) -> Conversation:
    """The conversation a JSON export holds, rebuilt as the store rebuilds one."""
    stored = [(item_from_dict(entry["item"]), entry["parent"]) for entry in document["items"]]
    origin = document["branched_from"]
    model = document["model"]
    return Conversation.from_tree(
        document["id"],
        document["title"],
        stored,
        document["leaf"],
        view_start=document["view_start"],
        branched_from=None if origin is None else BranchOrigin(**origin),
        system_prompt=document["system_prompt"],
        model=None if model is None else ModelRef(**model),
    )


def dicts(items: list[Item]) -> list[dict[str, Any]]:
    return [item_to_dict(item) for item in items]


# The formats


def test_markdown_export_of_every_part_kind_matches_the_expected_file() -> None:
    assert to_markdown(sample()) == EXPECTED_MD.read_text(encoding="utf-8")


def test_json_export_of_every_part_kind_matches_the_expected_file() -> None:
    assert to_json(sample()) == EXPECTED_JSON.read_text(encoding="utf-8")


def test_the_json_export_reads_back_as_the_conversation_with_every_version() -> None:
    conversation = sample()
    document = json.loads(to_json(conversation))
    back = rebuilt(document)

    assert dicts(back.all_items()) == dicts(conversation.all_items())
    assert [item.id for item in back.items] == [item.id for item in conversation.items]
    assert [e["item"]["id"] for e in document["items"] if not e["shown"]] == ["p0", "r0", "r4a"]
    assert (back.title, back.view_start, back.system_prompt) == (
        "A day in Lisbon",
        "p2",
        "Answer briefly.",
    )
    assert (back.branched_from, back.model) == (conversation.branched_from, conversation.model)


def test_the_markdown_shows_the_shown_path_in_order_with_who_wrote_each_reply() -> None:
    document = to_markdown(sample())
    headings = [line for line in document.splitlines() if line.startswith("## ")]

    assert headings == [
        "## You · version 2 of 2",
        "## Assistant · anthropic · claude-sonnet-4-5",
        "## Assistant · openai · gpt-4o-mini",
        "## You",
        "## Assistant · local · gemma-3-270m",
        "## You",
        "## Assistant · anthropic · claude-sonnet-4-5 · version 2 of 2",
        "## You",
        "## Assistant · openai · gpt-4o-mini",
    ]
    assert "Porto" not in document and "Ramiro" not in document  # Versions not shown.


def html_lines(document: str) -> list[str]:
    """What a Markdown viewer would take as HTML in `document`: raw HTML blocks and tags."""
    found: list[str] = []
    for token in RENDERED.parse(document):
        if token.type == "html_block":
            found.extend(token.content.splitlines())
        for child in token.children or []:
            if child.type == "html_inline":
                found.append(child.content)
    return found


def fences(document: str) -> list[Token]:
    return [token for token in RENDERED.parse(document) if token.type == "fence"]


def hostile() -> Conversation:
    conversation = Conversation(id="bad", title="# <img src=x onerror=alert(1)> `t` \x1b[2J")
    conversation.items += [
        UserPrompt("<!-- everything below is hidden\n<script>alert(1)</script>", id="p1"),
        ModelResponse(
            "openai",
            "m<b>x</b>",
            [
                ThinkingPart("</details>\n<script>x</script>\n```\nno end <i>"),
                TextPart("Code:\n\n```python\nprint('stopped here <b>\x1b]0;owned\x07"),
                ToolCallPart("c1", "evil`name", '{"x": "```` and \x1b[31m red"}', complete=True),
            ],
            state=ResponseState.FAILED,
            error="bad <b>html</b> and `code` \x1b[2J\nsecond line",
            id="r1",
        ),
        ToolResult("c1", "evil`name", "````\n```\n</details>\n\x9b31m\u202eevil", id="t1"),
        UserPrompt("END OF THE HOSTILE REPLY", id="p2"),
    ]
    return conversation


def test_hostile_content_cannot_break_out_of_its_blocks_or_act() -> None:
    document = to_markdown(hostile())
    tokens = RENDERED.parse(document)

    # Nothing swallowed what follows: every heading is there, and the last prompt after it.
    headings = [tokens[n + 1].content for n, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[1:] == ["You", "Assistant · openai · m\\<b\\>x\\</b\\>", "You"]
    assert tokens[-2].content == "END OF THE HOSTILE REPLY"
    # The only HTML is the export's own: the reasoning's <details> and its <summary>.
    assert html_lines(document) == [
        "<details>",
        "<summary>Thought · 6 words</summary>",
        "</details>",
    ]
    # The result's fence holds it whole, however many backticks it has.
    result = [fence for fence in fences(document) if "</details>" in fence.content]
    assert [fence.content for fence in result] == ["````\n```\n</details>\n\\x9b31m\\u202eevil\n"]
    # The reply's code block, stopped midway, ends with the reply.
    code = [fence for fence in fences(document) if fence.info == "python"]
    assert [fence.content for fence in code] == ["print('stopped here <b>␛]0;owned␇\n"]
    assert not any(char in document for char in "\x1b\x07\x9b\u202e")


def test_the_json_export_escapes_what_could_act_on_a_terminal_and_reads_back_the_same() -> None:
    conversation = hostile()
    document = to_json(conversation)

    assert not any(char in document for char in "\x1b\x07\x9b\u202e")
    assert "\\u001b[2J" in document and "\\u009b31m\\u202eevil" in document
    assert dicts(rebuilt(json.loads(document)).all_items()) == dicts(conversation.all_items())


def test_hostile_titles_names_and_errors_stay_plain_text() -> None:
    document = to_markdown(hostile())
    tokens = RENDERED.parse(document)
    title = tokens[1]

    assert title.type == "inline" and tokens[0].tag == "h1"
    assert [child.type for child in title.children or []] == ["text"]  # No image, no code.
    assert title.children[0].content == "# <img src=x onerror=alert(1)> `t` ␛[2J"
    failed = next(t for t in tokens if t.type == "inline" and "failed" in t.content)
    rendered = "".join(child.content for child in failed.children or [] if child.type == "text")
    assert "bad <b>html</b> and `code` ␛[2J second line" in rendered
    call = next(t for t in tokens if t.type == "inline" and t.content.startswith("**Tool call**"))
    assert [c.content for c in call.children or [] if c.type == "code_inline"] == ["evil`name"]


def test_a_file_name_is_made_of_the_titles_words_and_the_ids_start() -> None:
    conversation = Conversation(id="0123456789abcdef", title="Plan: a trip / to ../Lisbon? ✈")
    assert file_stem(conversation) == "plan-a-trip-to-lisbon-01234567"
    assert file_stem(Conversation(id="ab/cd", title="../..")) == "conversation-abcd"


def test_a_new_export_never_overwrites_a_file(tmp_path: Path) -> None:
    first = write_new_file(tmp_path / "exports", "talk-1234", ".md", "one")
    second = write_new_file(tmp_path / "exports", "talk-1234", ".md", "two")

    assert (first.name, second.name) == ("talk-1234.md", "talk-1234-2.md")
    assert (first.read_text(), second.read_text()) == ("one", "two")


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from chatui.export import write_new_file
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # A write past the limit fails instead.
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_new_file(Path(sys.argv[1]), "talk", ".md", "x" * 100_000)
except OSError as error:
    print(type(error).__name__, error.errno)
"""


def test_an_export_the_disk_cannot_hold_leaves_no_partial_file(tmp_path: Path) -> None:
    """The file size limit makes the write fail midway, as a full disk does."""
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )

    assert result.stdout == f"OSError {errno.EFBIG}\n" and not result.stderr
    assert list(tmp_path.iterdir()) == []


# The command


@pytest.fixture
def stored(tmp_path: Path) -> dict[str, str]:
    """A store with an older conversation and, the latest, `sample()` as it would be stored."""
    db = tmp_path / "chat.sqlite3"
    store = Store(db)
    older = store.create_conversation("An older talk")
    store.save_item(older.id, UserPrompt("Hello"))
    store.save_item(
        older.id, reply("old-r", "local", "gemma", TextPart("Hi."), state=ResponseState.COMPLETE)
    )
    latest = store.create_conversation("A day in Lisbon")
    conversation = sample()
    for item, parent in conversation.tree():
        store.save_item(latest.id, item, parent=parent)
    store.set_leaf(latest.id, conversation.leaf)
    store.set_view_start(latest.id, conversation.view_start)
    store.close()
    return {"db": str(db), "older": older.id, "latest": latest.id}


@pytest.fixture
def env(tmp_path: Path, stored: dict[str, str]) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text("")
    return {**os.environ, "CHATUI_CONFIG": str(config), "CHATUI_DB": stored["db"]}


def chatui_export(
    env: dict[str, str], *args: str, **streams: Any
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "chatui", "export", *args],
        **{"stdout": subprocess.PIPE, **streams},
        stderr=subprocess.PIPE,
        env=env,
        timeout=BOUND,
    )


def loaded(stored: dict[str, str], which: str) -> Conversation:
    store = Store(stored["db"])
    try:
        return store.load_conversation(stored[which])
    finally:
        store.close()


def said(result: subprocess.CompletedProcess[bytes]) -> str:
    """What the command said on stderr: one sentence, no traceback."""
    text = result.stderr.decode()
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text


def test_export_last_prints_the_latest_conversation_as_markdown(
    env: dict[str, str], stored: dict[str, str]
) -> None:
    result = chatui_export(env, "--last")

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == to_markdown(loaded(stored, "latest"))
    assert result.stdout.decode().startswith("# A day in Lisbon\n")


def test_export_as_json_parses_back_to_what_is_stored(
    env: dict[str, str], stored: dict[str, str]
) -> None:
    result = chatui_export(env, stored["latest"], "--format", "json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    conversation = loaded(stored, "latest")
    back = rebuilt(document)
    assert document["format"] == "chatui-conversation" and document["id"] == stored["latest"]
    assert dicts(back.all_items()) == dicts(conversation.all_items())
    assert [item.id for item in back.items] == [item.id for item in conversation.items]
    assert back.view_start == "p2"


def test_a_unique_start_of_an_id_names_its_conversation(
    env: dict[str, str], stored: dict[str, str]
) -> None:
    result = chatui_export(env, stored["older"][:6])

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("# An older talk\n")


def test_an_unknown_id_exits_2_with_a_sentence(env: dict[str, str]) -> None:
    result = chatui_export(env, "nope")

    assert result.returncode == 2 and result.stdout == b""
    assert said(result) == "chatui export: no conversation's id is or starts with 'nope'.\n"


def test_a_start_of_several_ids_exits_2_and_names_them(
    env: dict[str, str], stored: dict[str, str]
) -> None:
    store = Store(stored["db"])
    ids = [store.create_conversation(f"Talk {n}").id for n in range(17)]  # Two share a first digit.
    store.close()
    first = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) >= 2)

    result = chatui_export(env, first)

    assert result.returncode == 2 and result.stdout == b""
    assert "conversations' ids start with" in said(result) and "Give more of the id." in said(
        result
    )


def test_export_with_no_store_exits_2_and_makes_none(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "none" / "chat.sqlite3"
    result = chatui_export({**env, "CHATUI_DB": str(missing)}, "--last")

    assert result.returncode == 2
    assert "there is no conversation store at" in said(result)
    assert not missing.parent.exists()


def test_export_into_a_closed_pipe_ends_quietly(env: dict[str, str]) -> None:
    """As `chatui export --last | head -1` once head has read its line."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = chatui_export(env, "--last", stdout=writer)
    finally:
        os.close(writer)

    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == b""


def test_export_to_a_file_writes_it_whole(
    env: dict[str, str], stored: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "out.md"
    target.write_text("an older export")

    result = chatui_export(env, "--last", "--output", str(target))

    assert result.returncode == 0 and result.stdout == b""
    assert target.read_text() == to_markdown(loaded(stored, "latest"))
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".out")) == []


def test_export_to_a_file_that_cannot_be_written_exits_1_and_keeps_the_old_one(
    env: dict[str, str], stored: dict[str, str], tmp_path: Path
) -> None:
    """The file size limit makes the write fail midway, as a full disk does."""
    store = Store(stored["db"])
    store.save_item(stored["latest"], UserPrompt("A long one?"))
    long = reply("long", "local", "gemma", TextPart("x" * 600_000), state=ResponseState.COMPLETE)
    store.save_item(stored["latest"], long)
    store.close()
    target = tmp_path / "out.md"
    target.write_text("an older export")
    full = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (256_000, 256_000))\n"
        "from chatui.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", full, "export", "--last", "--output", str(target)],
        capture_output=True,
        env=env,
        timeout=BOUND,
    )

    assert result.returncode == 1
    assert said(result).startswith(f"chatui export: could not write {target}: ")
    assert target.read_text() == "an older export"
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".out")] == []


IMPORTS = """
import sys
from chatui.cli import main
code = main(sys.argv[1:])
print(code, sorted(name for name in sys.modules if name.split(".")[0] == "textual"))
"""


def test_the_export_command_imports_no_textual(env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, "export", "--last", "-o", str(tmp_path / "x.md")],
        capture_output=True,
        text=True,
        env=env,
        timeout=BOUND,
    )

    assert result.stdout == "0 []\n", result.stderr


# The palette


async def run_palette_export(pilot: Any) -> None:
    app = pilot.app
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*["space" if c == " " else c for c in "Export the conversation"])
    await wait_until(pilot, lambda: app.screen.query_one(CommandList).option_count >= 1)
    await pilot.press("enter")


def notices(app: Any) -> list[str]:
    return [notice.message for notice in app._notifications]


async def test_the_palette_exports_the_conversation_to_a_new_file_and_shows_its_path(
    store: Store, tmp_path: Path
) -> None:
    app = make_app(store, ScriptedProvider(words("Tram 28, then **Alfama**.")))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await send(pilot, "A day in Lisbon?")
        await wait_until(pilot, settled(app))

        await run_palette_export(pilot)
        await wait_until(pilot, lambda: len(notices(app)) == 1)
        await run_palette_export(pilot)
        await wait_until(pilot, lambda: len(notices(app)) == 2)

        prefix = "Exported the conversation to "
        assert all(notice.startswith(prefix) for notice in notices(app))
        first, second = (Path(notice.removeprefix(prefix)) for notice in notices(app))
        assert first.parent == second.parent == tmp_path / "exports"
        stem = file_stem(app.chat.conversation)
        assert (first.name, second.name) == (f"{stem}.md", f"{stem}-2.md")
        expected = to_markdown(app.chat.conversation)
        assert first.read_text() == second.read_text() == expected
        assert "Tram 28, then **Alfama**." in expected
        await wait_until(pilot, lambda: "Exported the conversation to" in screen_text(app))


async def test_an_export_that_cannot_be_written_says_why_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "exports").write_text("a file where the folder would be")
    app = make_app(store, ScriptedProvider(words("Hello.")))
    async with app.run_test(size=(120, 40)) as pilot:
        await send(pilot, "Hi")
        await wait_until(pilot, settled(app))
        before = dicts(store.load_conversation(app.chat.conversation.id).all_items())

        await run_palette_export(pilot)
        await wait_until(pilot, lambda: len(notices(app)) == 1)

        (notice,) = app._notifications
        assert notice.severity == "error"
        assert notice.message.startswith(
            f"The conversation could not be exported to {tmp_path / 'exports'}: "
        )
        assert "No file was written and the conversation is still stored" in notice.message
        assert (tmp_path / "exports").read_text() == "a file where the folder would be"
        assert dicts(store.load_conversation(app.chat.conversation.id).all_items()) == before


async def test_the_palette_offers_no_export_for_an_empty_conversation(store: Store) -> None:
    app = make_app(store, ScriptedProvider(words("Hello.")))
    async with app.run_test() as pilot:
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Export the conversation" not in titles

        await send(pilot, "Hi")
        await wait_until(pilot, settled(app))
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Export the conversation" in titles


def test_a_conversation_stored_damaged_exits_2_with_a_sentence(
    env: dict[str, str], stored: dict[str, str]
) -> None:
    with sqlite3.connect(stored["db"]) as db:
        db.execute("""UPDATE items SET data = '{"kind": "mystery"}' WHERE id = 'p1'""")
    result = chatui_export(env, "--last")

    assert result.returncode == 2 and result.stdout == b""
    assert said(result) == (
        "chatui export: that conversation could not be read: the store holds damaged data for it.\n"
    )
