"""Tool calls on screen: the statuses, the approval dialog's answers, literal text, snapshots."""

from __future__ import annotations

import asyncio

from textual import events
from textual.widgets import Button, Collapsible

from chatui.messages import (
    ModelResponse,
    ResponseState,
    TextPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
)
from chatui.providers.base import StreamEnd, TextDelta
from chatui.screens.approval import ApprovalDialog
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.composer import Composer
from chatui.widgets.status_bar import StatusBar
from chatui.widgets.tool_call import ToolCallView
from tests.support.app import approval_shown, fix_stop_time, make_app, send, settled, wait_until
from tests.support.clocks import FakeClock
from tests.support.scripted import STALL, ScriptedProvider, calls, tool_call, words

SIZE = (80, 24)


class Counter:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def tool(self) -> Tool:
        def touch(path: str) -> str:
            """Touch a file."""
            self.ran.append(path)
            return f"touched {path}"

        return Tool(touch, needs_approval=True)


def views(app) -> list[ToolCallView]:  # type: ignore[no-untyped-def]
    return list(app.chat.query(ToolCallView))


def head(view: ToolCallView) -> str:
    return str(view._head.render())


async def test_approve_for_this_conversation_asks_once_per_conversation(store: Store) -> None:
    counter = Counter()
    provider = ScriptedProvider(
        calls(("c1", "touch", '{"path": "a"}')),
        calls(("c2", "touch", '{"path": "b"}')),
        words("Both touched."),
        calls(("c3", "touch", '{"path": "c"}')),
        words("Touched in the new one."),
    )
    app = make_app(store, provider, tools=ToolRegistry([counter.tool()]))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "touch a and b")
        await wait_until(pilot, approval_shown(app))
        await pilot.press("a")
        await wait_until(pilot, settled(app))
        assert counter.ran == ["a", "b"]  # The second call was not asked about.
        assert [v.status for v in views(app)] == ["done", "done"]

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not views(app))
        await send(pilot, "touch c")
        await wait_until(pilot, approval_shown(app))  # Asked again.
        await pilot.press("y")
        await wait_until(pilot, settled(app))
        assert counter.ran == ["a", "b", "c"]


def touching(store: Store):  # type: ignore[no-untyped-def]
    """An app whose model calls `touch`, which asks first; its counter and its provider."""
    counter = Counter()
    provider = ScriptedProvider(calls(("c1", "touch", '{"path": "a"}')), words("I won't."))
    return make_app(store, provider, tools=ToolRegistry([counter.tool()])), counter, provider


async def open_the_dialog(pilot, app) -> None:  # type: ignore[no-untyped-def]
    await send(pilot, "touch a")
    await wait_until(pilot, approval_shown(app))


async def test_deny_keeps_the_call_from_running_and_says_so(store: Store) -> None:
    app, counter, provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        await open_the_dialog(pilot, app)
        assert app.screen.focused is app.screen.query_one("#deny")  # Enter denies.
        await pilot.press("enter")
        await wait_until(pilot, settled(app))

        assert counter.ran == []
        (view,) = views(app)
        assert view.status == "denied" and "denied" in head(view)
        assert app.last_outcome.state is ResponseState.COMPLETE
        (tool_message,) = [m for m in provider.records[1].request.messages if m.role == "tool"]
        assert tool_message.content == "The user denied this tool call."


async def test_outside_text_in_a_call_is_shown_literally(store: Store) -> None:
    def shout(words: str) -> str:
        """Shout back."""
        return f"\x1b[2J\x1b]0;pwned\x07[bold red]{words}[/]"

    name = "[b]ev\x1b[31mil"
    provider = ScriptedProvider(
        calls(("c1", name, "{}"), ("c2", "shout", '{"words": "[link=x]hi"}')), words("Done.")
    )
    app = make_app(store, provider, tools=ToolRegistry([Tool(shout)]))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "go")
        await wait_until(pilot, settled(app))

        unknown, shouted = views(app)
        assert "[b]ev␛[31mil" in head(unknown)  # Neither markup nor an escape sequence.
        assert "There is no tool named" in str(unknown.query_one(".tool-output").render())
        output = str(shouted.query_one(".tool-output").render())
        assert output == "␛[2J␛]0;pwned␇[bold red][link=x]hi[/]"
        assert '{"words": "[link=x]hi"}' in str(shouted._arguments.render())


async def test_a_long_result_is_collapsed_under_its_size(store: Store) -> None:
    lines = "\n".join(f"line {n}" for n in range(1, 41))

    def dump() -> str:
        """Dump many lines."""
        return lines

    provider = ScriptedProvider(calls(("c1", "dump", "{}")), words("Forty lines."))
    app = make_app(store, provider, tools=ToolRegistry([Tool(dump)]))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "dump")
        await wait_until(pilot, settled(app))
        collapsible = views(app)[0].query_one(Collapsible)
        assert collapsible.collapsed
        assert collapsible.title == f"Result · 40 lines, {len(lines)} characters"


async def test_keys_typed_before_the_approval_dialog_was_drawn_never_answer_it(
    store: Store,
) -> None:
    app, counter, _provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        # Read from the terminal now, while the reply is still to come: typed for the
        # composer. They reach the app only once the dialog is up, as keys queued
        # behind a busy loop do.
        typed_ahead = [events.Key(key, key) for key in "hay"]
        await send(pilot, "touch a")
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalDialog))
        await pilot.pause()  # The dialog is drawn.
        for key in typed_ahead:
            app.post_message(key)
        await pilot.pause()
        await pilot.pause()

        assert isinstance(app.screen, ApprovalDialog)  # Still asking: not approved, not run.
        assert counter.ran == [] and [v.status for v in views(app)] == ["approval"]

        await wait_until(pilot, approval_shown(app))
        await pilot.press("y")  # Typed once the dialog is on screen: it answers.
        await wait_until(pilot, settled(app))
        assert counter.ran == ["a"] and [v.status for v in views(app)] == ["done"]
        assert not app.chat._approved.get(app.chat.conversation.id)  # Once, not "a".
        assert app.chat.query_one(Composer).text == "hay"  # Kept for where they were typed.


async def test_editing_keys_typed_before_the_dialog_edit_the_draft(store: Store) -> None:
    app, counter, _provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        typed_ahead = [events.Key(k, c) for k, c in [("h", "h"), ("x", "x"), ("backspace", None)]]
        typed_ahead.append(events.Key("i", "i"))
        await send(pilot, "touch a")
        await wait_until(pilot, approval_shown(app))
        for key in typed_ahead:
            app.post_message(key)
        await pilot.pause()
        await pilot.press("n")
        await wait_until(pilot, settled(app))
        composer = app.chat.query_one(Composer)
        await wait_until(pilot, lambda: composer.text not in ("", "h", "hx", "hxi"))

        assert counter.ran == [] and [v.status for v in views(app)] == ["denied"]
        assert composer.text == "hi"  # As typed, the Backspace included.


async def test_a_click_read_before_the_dialog_was_drawn_never_answers_it(store: Store) -> None:
    app, counter, _provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "touch a")
        await wait_until(pilot, approval_shown(app))
        dialog = app.screen
        assert isinstance(dialog, ApprovalDialog) and dialog.shown_at is not None
        button = dialog.query_one("#once", Button).region
        x, y = button.x + button.width // 2, button.y + button.height // 2
        clicks = [
            kind(None, x, y, 0, 0, 1, False, False, False, screen_x=x, screen_y=y)
            for kind in (events.MouseDown, events.MouseUp)
        ]
        for click in clicks:
            click.time = dialog.shown_at - 0.05  # Read just before the dialog was drawn.
            app.post_message(click)
        for _ in range(3):
            await pilot.pause()

        assert app.screen is dialog and counter.ran == []  # Still asking: nothing ran.
        await pilot.click("#once")  # A click once it is on screen answers.
        await wait_until(pilot, settled(app))
        assert counter.ran == ["a"] and [v.status for v in views(app)] == ["done"]


async def test_a_second_key_for_the_first_dialog_does_not_answer_the_next_one(
    store: Store,
) -> None:
    counter = Counter()
    provider = ScriptedProvider(
        calls(("c1", "touch", '{"path": "a"}'), ("c2", "touch", '{"path": "b"}')), words("Ok.")
    )
    app = make_app(store, provider, tools=ToolRegistry([counter.tool()]))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "touch a and b")
        await wait_until(pilot, approval_shown(app))
        first = app.screen
        again = events.Key("y", "y")  # A double press: its second key is read now.
        await pilot.press("y")
        await wait_until(pilot, lambda: app.screen is not first and approval_shown(app)())
        app.post_message(again)  # It reaches the second dialog, drawn after it was read.
        await pilot.pause()
        await pilot.pause()

        assert isinstance(app.screen, ApprovalDialog) and app.screen is not first
        assert counter.ran == ["a"]
        assert app.chat.query_one(Composer).text == ""  # Meant for a dialog: not typed.
        await pilot.press("n")
        await wait_until(pilot, settled(app))
        assert counter.ran == ["a"] and [v.status for v in views(app)] == ["done", "denied"]


# Snapshots


def approval_app(store: Store):  # type: ignore[no-untyped-def]
    def shell(command: str) -> str:
        """Run a command."""
        return ""

    script = [
        TextDelta("I will list the files."),
        *tool_call(0, "c1", "shell", ['{"command": "ls -la ~/projects"}']),
        StreamEnd("tool_calls"),
    ]
    provider = ScriptedProvider(script)
    tools = ToolRegistry([Tool(shell, needs_approval=True)])
    return make_app(store, provider, clock=FakeClock(), tools=tools)


def test_the_approval_dialog(snap_compare, store: Store) -> None:
    app = approval_app(store)

    async def run_before(pilot) -> None:
        await send(pilot, "What is in my projects folder?")
        await wait_until(pilot, approval_shown(app))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 30), run_before=run_before)


def test_a_tool_call_running(snap_compare, store: Store) -> None:
    release = asyncio.Event()

    async def fetch(url: str) -> str:
        """Fetch a page."""
        await release.wait()
        return ""

    script = [
        *tool_call(0, "c1", "fetch", ['{"url": "https://example.org"}']),
        StreamEnd("tool_calls"),
    ]
    provider = ScriptedProvider(script)
    app = make_app(store, provider, clock=FakeClock(), tools=ToolRegistry([Tool(fetch)]))

    async def run_before(pilot) -> None:
        await send(pilot, "Fetch example.org")
        await wait_until(pilot, lambda: bool(views(app)) and views(app)[0].status == "running")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_tool_call_arguments_streaming(snap_compare, store: Store) -> None:
    def note(text: str) -> str:
        """Keep a note."""
        return ""

    script = [
        TextDelta("Noting it."),
        *tool_call(0, "c1", "note", ['{"text": "buy fl', "our and "], end=False),
        STALL,
    ]
    provider = ScriptedProvider(script)
    app = make_app(store, provider, clock=FakeClock(), tools=ToolRegistry([Tool(note)]))

    async def run_before(pilot) -> None:
        await send(pilot, "Remind me to buy flour and soda")
        await provider.started.wait()
        await provider.last.stalled.wait()
        await wait_until(pilot, lambda: bool(views(app)) and "and" in views(app)[0].call.arguments)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_every_tool_call_status_after_a_reload(snap_compare, store: Store) -> None:
    conversation = store.create_conversation("Tools")
    store.save_item(conversation.id, UserPrompt("Check everything"))
    calls_ = [
        ToolCallPart("a", "calculate", '{"expression": "6*7"}', complete=True),
        ToolCallPart("b", "read_file", '{"path": "../secret"}', complete=True),
        ToolCallPart("c", "shell", '{"command": "rm -rf build"}', complete=True),
        ToolCallPart("d", "shell", '{"command": "sleep 30"}', complete=True),
        ToolCallPart("e", "read_file", '{"path": "notes/to', complete=False),
    ]
    response = ModelResponse(
        "scripted", "script-1", [TextPart("Checking."), *calls_], ResponseState.COMPLETE
    )
    store.save_item(conversation.id, response)
    for call_id, content, state in [
        ("a", "42", "ok"),
        ("b", "Refused: '../secret' is a path outside the workspace.", "error"),
        ("c", "The user denied this tool call.", "denied"),
        ("d", "The tool call was cancelled by the user before it finished.", "cancelled"),
    ]:
        store.save_item(conversation.id, ToolResult(call_id, "x", content, state))  # type: ignore[arg-type]
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        await app.open_conversation(conversation.id)
        await pilot.pause()
        assert [v.status for v in views(app)] == [
            "done",
            "failed",
            "denied",
            "cancelled",
            "cut off",
        ]

    assert snap_compare(app, terminal_size=(80, 44), run_before=run_before)


def test_esc_in_the_approval_dialog(snap_compare, store: Store) -> None:
    app = approval_app(store)

    async def run_before(pilot) -> None:
        await send(pilot, "What is in my projects folder?")
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalDialog))
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await fix_stop_time(pilot)
        assert app.screen.query_one(StatusBar).state == "stopped"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_a_second_esc_after_the_dialog_closed_changes_nothing(store: Store) -> None:
    app, counter, provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        await open_the_dialog(pilot, app)
        await pilot.press("escape", "escape")
        await wait_until(pilot, settled(app))

        assert counter.ran == [] and len(provider.records) == 1
        items = store.load_conversation(app.chat.conversation.id).items
        assert [r.state for r in items if isinstance(r, ToolResult)] == ["cancelled"]
        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert not isinstance(app.screen, ApprovalDialog)


async def test_quitting_with_the_dialog_open_stores_the_call_cancelled(store: Store) -> None:
    app, counter, _provider = touching(store)
    async with app.run_test(size=SIZE) as pilot:
        await open_the_dialog(pilot, app)
        conversation_id = app.chat.conversation.id
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running)

    assert app.return_code == 0 and counter.ran == []
    items = store.load_conversation(conversation_id).items
    assert [r.state for r in items if isinstance(r, ToolResult)] == ["cancelled"]
