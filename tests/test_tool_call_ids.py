"""Each tool call's result is shown under that call, whatever ids the server gives its calls.

Compatible servers omit tool-call ids (the provider then names every reply's
first call `call_0`) or repeat them, within a reply or from reply to reply;
conversations stored before chatui gave every call an id of its own hold such
repeats too. The real `openai` SDK talks to such servers on 127.0.0.1
(`wire.WireServer`, which refuses a history the API would refuse); the screen
is checked live and after a reload, in a new app on the same store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from chatui.app import ChatApp
from chatui.messages import (
    ModelResponse,
    ResponseState,
    TextPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
)
from chatui.providers.base import Provider
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.tool_call import ToolCallView
from tests.support import openai_wire as ow
from tests.support.app import approval_shown, make_app, send, settled, wait_until
from tests.support.remote import openai_at
from tests.support.wire import WireServer

SIZE = (100, 50)

Shown = tuple[str, str, str | None]  # A call on screen: its path, its status, its output.


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as wire:
        yield wire


def reading(*, ask: bool = False) -> ToolRegistry:
    def read(path: str) -> str:
        """Read a file."""
        return f"contents of {path}"

    return ToolRegistry([Tool(read, needs_approval=ask)])


def calling(server_ids: list[str | None], paths: list[str]) -> list:
    """One reply calling `read` on each path, with the server's id for it (None: no id)."""
    steps: list = []
    for index, (call_id, path) in enumerate(zip(server_ids, paths, strict=True)):
        arguments = json.dumps({"path": path})
        if call_id is None:
            steps += ow.tool_call_without_id(index, "read", arguments)
        else:
            steps += ow.tool_call(index, call_id, "read", arguments)
    return [*steps, *ow.ending("tool_calls")]


def calls_shown(app: ChatApp) -> list[Shown]:
    shown: list[Shown] = []
    for view in app.chat.query(ToolCallView):
        outputs = view.query(".tool-output")
        output = str(outputs.first().render()) if outputs else None
        shown.append((json.loads(view.call.arguments)["path"], view.status, output))
    return shown


def interrupted(app: ChatApp) -> list[bool]:
    """For each reply on screen, whether it is drawn "■ interrupted"."""
    return [view.has_class("-interrupted") for view in app.chat.query(AssistantMessage)]


async def reloaded(
    store: Store, provider: Provider, conversation_id: str, check: Callable[[ChatApp], None]
) -> None:
    """Open the stored conversation in a new app and run `check(app)` on it."""
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        await app.open_conversation(conversation_id)
        await pilot.pause()
        check(app)


def read_right(path: str, status: str = "done") -> Shown:
    return (path, status, f"contents of {path}")


async def test_a_server_that_omits_call_ids_gets_each_result_under_its_own_call(
    server: WireServer, store: Store
) -> None:
    server.play(calling([None], ["a.txt"]), calling([None], ["b.txt"]), ow.reply("Read both."))
    provider = openai_at(server.base_url)
    app = make_app(store, provider, tools=reading())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "read a.txt, then b.txt")
        await wait_until(pilot, settled(app))

        assert app.last_outcome.state is ResponseState.COMPLETE
        expected = [read_right("a.txt"), read_right("b.txt")]
        assert calls_shown(app) == expected
        assert interrupted(app) == [False, False, False]
        conversation_id = app.chat.conversation.id

    def check(app: ChatApp) -> None:
        assert calls_shown(app) == expected
        assert interrupted(app) == [False, False, False]

    await reloaded(store, provider, conversation_id, check)
    # The model was sent each result after its own call, under ids the API takes.
    history = server.requests[2].body["messages"]
    calls = {c["id"]: c for m in history if m["role"] == "assistant" for c in m["tool_calls"]}
    answers = {m["tool_call_id"]: m["content"] for m in history if m["role"] == "tool"}
    assert len(calls) == 2 and answers.keys() == calls.keys()
    for call_id, call in calls.items():
        path = json.loads(call["function"]["arguments"])["path"]
        assert answers[call_id] == f"contents of {path}"
    await provider.close()


async def test_an_id_repeated_within_one_reply_leaves_no_call_waiting(
    server: WireServer, store: Store
) -> None:
    server.play(calling(["same", "same"], ["a.txt", "b.txt"]), ow.reply("Read both."))
    provider = openai_at(server.base_url)
    app = make_app(store, provider, tools=reading())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "read a.txt and b.txt")
        await wait_until(pilot, settled(app))

        expected = [read_right("a.txt"), read_right("b.txt")]
        assert calls_shown(app) == expected
        assert interrupted(app) == [False, False]
        conversation_id = app.chat.conversation.id

    def check(app: ChatApp) -> None:
        assert calls_shown(app) == expected

    await reloaded(store, provider, conversation_id, check)
    await provider.close()


async def test_a_server_that_gives_every_call_the_same_id_never_shows_a_finished_reply_stopped(
    server: WireServer, store: Store
) -> None:
    server.play(
        calling(["call_x"], ["a.txt"]),  # Stopped in the approval dialog.
        calling(["call_x"], ["b.txt"]),  # Denied.
        ow.reply("I won't, then."),
        calling(["call_x"], ["c.txt"]),  # Approved.
        ow.reply("Read it."),
    )
    provider = openai_at(server.base_url)
    app = make_app(store, provider, tools=reading(ask=True))
    async with app.run_test(size=SIZE) as pilot:
        for prompt, key in [("read a.txt", "escape"), ("b.txt?", "n"), ("c.txt?", "y")]:
            await send(pilot, prompt)
            await wait_until(pilot, approval_shown(app))
            await pilot.press(key)
            await wait_until(pilot, settled(app))

        cancelled = "The tool call was cancelled by the user before it finished."
        expected = [
            ("a.txt", "cancelled", cancelled),
            ("b.txt", "denied", "The user denied this tool call."),
            read_right("c.txt"),
        ]
        assert calls_shown(app) == expected
        # Only the reply whose call the Esc cancelled was interrupted.
        assert interrupted(app) == [True, False, False, False, False]
        assert app.last_outcome.state is ResponseState.COMPLETE
        conversation_id = app.chat.conversation.id

    def check(app: ChatApp) -> None:
        assert calls_shown(app) == expected
        assert interrupted(app) == [True, False, False, False, False]

    await reloaded(store, provider, conversation_id, check)
    await provider.close()


def old_conversation(store: Store) -> str:
    """A conversation stored before every call had an id of its own: `call_0` five times."""
    conversation = store.create_conversation("Old")

    def reply(*paths: str, state: ResponseState = ResponseState.COMPLETE) -> ModelResponse:
        calls = [ToolCallPart("call_0", "read", json.dumps({"path": p}), True) for p in paths]
        return ModelResponse("openai", "wire-model", [*calls], state)

    def result(path: str) -> ToolResult:
        return ToolResult("call_0", "read", f"contents of {path}")

    for item in [
        UserPrompt("read a, then b and c"),
        reply("a.txt"),
        result("a.txt"),
        reply("b.txt", "c.txt"),
        result("b.txt"),
        result("c.txt"),
        ModelResponse(
            "openai", "wire-model", [TextPart("Read all three.")], ResponseState.COMPLETE
        ),
        UserPrompt("and d"),
        reply("d.txt"),
        ToolResult("call_0", "read", "The tool call was cancelled by the user.", "cancelled"),
    ]:
        store.save_item(conversation.id, item)
    return conversation.id


async def test_a_stored_conversation_with_repeated_ids_shows_each_result_under_its_call(
    server: WireServer, store: Store
) -> None:
    conversation_id = old_conversation(store)
    server.play(calling([None], ["e.txt"]), ow.reply("Read e."))
    provider = openai_at(server.base_url)
    app = make_app(store, provider, tools=reading())
    async with app.run_test(size=SIZE) as pilot:
        await app.open_conversation(conversation_id)
        await pilot.pause()
        cancelled = ("d.txt", "cancelled", "The tool call was cancelled by the user.")
        old = [read_right("a.txt"), read_right("b.txt"), read_right("c.txt"), cancelled]
        assert calls_shown(app) == old
        assert interrupted(app) == [False, False, False, True]

        await send(pilot, "and e")  # The server names its call `call_0` too.
        await wait_until(pilot, settled(app))

        assert calls_shown(app) == [*old, read_right("e.txt")]
        assert interrupted(app) == [False, False, False, True, False, False]

    items = store.load_conversation(conversation_id).items
    new_call = [c for i in items if isinstance(i, ModelResponse) for c in i.tool_calls][-1]
    assert new_call.id != "call_0"  # An id of its own, which its result carries.
    assert [i.call_id for i in items if isinstance(i, ToolResult)][-1] == new_call.id
    await provider.close()
