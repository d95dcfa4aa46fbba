"""Opening a long conversation reads what it shows; the rest is read when something uses it.

The store reads the tree's shape, every prompt and the last items of the path
at open (`Store.load_conversation`); every other item is a stand-in that reads
all of them the first time one of its fields is read (`chatui.lazy_items`).
Everything that reads them (Ctrl+U, a turn's history, a retry, a version flip,
a fork, a full read) sees the items as stored.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatui.lazy_items as lazy_items_module
import chatui.store as store_module
from chatui.gc_pause import HOLDS_FULL_PASSES, NO_FULL_PASS
from chatui.messages import (
    Item,
    ModelResponse,
    ResponseState,
    ToolCallPart,
    ToolResult,
    UserPrompt,
    item_to_dict,
)
from chatui.screens.chat import SHOWN_ITEMS
from chatui.store import READ_AT_OPEN, Store
from chatui.turn_kinds import retryable
from chatui.widgets.chat_message import AssistantMessage, UserMessage
from chatui.widgets.message_list import MessageList
from tests.support.app import make_app, press_and_settle, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, words


@dataclass
class Stored:
    """A conversation as it was stored: its id, its path (oldest first) and every item."""

    id: str
    path: list[Item]
    every: list[Item]

    def on_path(self, kind: type[Item]) -> list[Any]:
        return [item for item in self.path if isinstance(item, kind)]


def reply(text: str, *calls: ToolCallPart) -> ModelResponse:
    response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    response.append_text(text)
    response.parts += calls
    return response


def store_conversation(store: Store, items: int, *, retried_last: bool = False) -> Stored:
    """A conversation of at least `items` items, as the app makes them.

    Each exchange is a prompt and its reply; every fourth reply first calls a
    tool (the call, its result, then the reply); every tenth reply, and the
    last one if `retried_last`, was retried: its older version stays stored,
    off the path.
    """
    conversation = store.create_conversation("long")
    path: list[Item] = []
    every: list[Item] = []

    def add(item: Item, parent: str | None, *, shown: bool = True) -> None:
        store.save_item(conversation.id, item, parent=parent)
        every.append(item)
        if shown:
            path.append(item)

    n = 0
    while len(every) < items:
        n += 1
        last = len(every) + 4 >= items
        prompt = UserPrompt(f"prompt {n}")
        add(prompt, path[-1].id if path else None)
        if n % 10 == 3 or (last and retried_last):
            add(reply(f"old reply {n}"), prompt.id, shown=False)
        if n % 4 == 1 and not last:
            call = ToolCallPart(f"call_{n}", "read_file", f'{{"path": "f{n}"}}', complete=True)
            add(reply(f"reading {n}", call), prompt.id)
            add(ToolResult(call.id, call.name, f"content of f{n}"), path[-1].id)
        add(reply(f"reply {n}"), path[-1].id)
    store.set_leaf(conversation.id, path[-1].id)
    store.release_conversation(conversation.id)
    return Stored(conversation.id, path, every)


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Stored]:
    """A store holding a conversation of 10,000 items (built once: copy it to change it)."""
    path = tmp_path_factory.mktemp("long") / "chat.sqlite3"
    store = Store(path)
    stored = store_conversation(store, 10_000)
    store.close()
    return path, stored


@pytest.fixture
def long_store(ten_thousand: tuple[Path, Stored], tmp_path: Path) -> Iterator[tuple[Store, Stored]]:
    built, stored = ten_thousand
    copy = tmp_path / "chat.sqlite3"
    shutil.copyfile(built, copy)
    store = Store(copy)
    yield store, stored
    store.close()


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the items parsed from their stored JSON, in order (by the store or a stand-in)."""
    ids: list[str] = []

    def counting(original: Callable[[dict[str, Any]], Item]) -> Callable[[dict[str, Any]], Item]:
        def parse(data: dict[str, Any]) -> Item:
            ids.append(data["id"])
            return original(data)

        return parse

    for module in (store_module, lazy_items_module):
        monkeypatch.setattr(module, "item_from_dict", counting(module.item_from_dict))
    return ids


def beyond_prompts(ids: list[str], stored: Stored) -> set[str]:
    prompts = {item.id for item in stored.every if isinstance(item, UserPrompt)}
    return set(ids) - prompts


def tail(stored: Stored) -> set[str]:
    """The ids of the last items of the path that opening reads, prompts aside."""
    return {item.id for item in stored.path[-READ_AT_OPEN:] if not isinstance(item, UserPrompt)}


def as_stored(items: list[Item]) -> list[dict[str, Any]]:
    return [item_to_dict(item) for item in items]


# Opening


def test_opening_a_conversation_of_10000_items_parses_only_its_prompts_and_the_shown_tail(
    long_store: tuple[Store, Stored], parsed: list[str]
) -> None:
    store, stored = long_store
    conversation = store.load_conversation(stored.id)

    assert [item.id for item in conversation.items] == [item.id for item in stored.path]
    assert len(stored.every) >= 10_000
    assert beyond_prompts(parsed, stored) == tail(stored)
    assert len(parsed) - len(tail(stored)) == len(stored.on_path(UserPrompt))  # No version either.
    # The screen's questions read nothing more: where the last prompt is, whether to retry.
    last_prompt = stored.on_path(UserPrompt)[-1]
    assert conversation.items.index(last_prompt) == stored.path.index(last_prompt)
    assert retryable(conversation) == last_prompt
    assert [item.kind for item in conversation.items] == [item.kind for item in stored.path]
    assert beyond_prompts(parsed, stored) == tail(stored)


async def test_opening_a_conversation_of_10000_items_in_the_app_reads_only_what_it_shows(
    long_store: tuple[Store, Stored], parsed: list[str]
) -> None:
    store, stored = long_store
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await pilot.pause()
        parsed.clear()
        await app.open_conversation(stored.id)
        await pilot.pause()

        chat = app.chat
        assert chat.hidden_items == len(stored.path) - SHOWN_ITEMS
        shown = [view.response.text for view in chat.query(AssistantMessage)]
        assert shown[-1] == stored.path[-1].text  # type: ignore[union-attr]
        assert len(chat.query(UserMessage)) == sum(
            isinstance(item, UserPrompt) for item in stored.path[-SHOWN_ITEMS:]
        )
        assert beyond_prompts(parsed, stored) == tail(stored)
        # The composer's Up walks every prompt of the path.
        assert chat._composer.prompts == [p.text for p in stored.on_path(UserPrompt)]


async def test_opening_holds_the_collectors_full_passes_until_it_is_drawn(
    long_store: tuple[Store, Stored], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not HOLDS_FULL_PASSES:
        pytest.skip("this Python's collector is incremental: no full pass to hold")
    store, stored = long_store
    thresholds = gc.get_threshold()
    held: list[tuple[str, int]] = []  # The oldest generation's threshold as it loads and mounts.
    load, replace = Store.load_conversation, MessageList.replace_items

    def loading(self: Store, conversation_id: str) -> Any:
        held.append(("load", gc.get_threshold()[2]))
        return load(self, conversation_id)

    async def mounting(self: MessageList, widgets: Any) -> None:
        await replace(self, widgets)
        held.append(("mount", gc.get_threshold()[2]))

    monkeypatch.setattr(Store, "load_conversation", loading)
    monkeypatch.setattr(MessageList, "replace_items", mounting)
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await pilot.pause()
        held.clear()
        await app.open_conversation(stored.id)
        assert held == [("load", NO_FULL_PASS), ("mount", NO_FULL_PASS)]
        await pilot.pause()
        assert gc.get_threshold() == thresholds  # Released once it was drawn.


# What reads the rest


def test_the_first_field_read_of_an_earlier_item_reads_them_all_in_one_go(
    long_store: tuple[Store, Stored], parsed: list[str]
) -> None:
    store, stored = long_store
    conversation = store.load_conversation(stored.id)
    parsed.clear()

    first_reply = conversation.items[1]
    assert isinstance(first_reply, ModelResponse)
    assert first_reply.text == stored.path[1].text  # type: ignore[union-attr]

    unread = {item.id for item in stored.every if not isinstance(item, UserPrompt)} - tail(stored)
    assert set(parsed) == unread and len(parsed) == len(unread)  # Each once.
    assert {type(item) for item in conversation.all_items()} == {
        UserPrompt,
        ModelResponse,
        ToolResult,
    }
    parsed.clear()
    assert as_stored(conversation.all_items()) == as_stored(stored.every)
    assert parsed == []  # Read once, for good.


def test_a_full_read_gives_every_item_and_path_as_stored(
    long_store: tuple[Store, Stored],
) -> None:
    store, stored = long_store
    conversation = store.load_conversation(stored.id)

    assert conversation.all_items() == stored.every
    assert conversation.path_to(stored.path[-1].id) == stored.path
    assert as_stored([item for item, _ in conversation.tree()]) == as_stored(stored.every)


def test_a_fork_from_an_early_prompt_copies_the_path_before_it_as_stored(
    long_store: tuple[Store, Stored],
) -> None:
    store, stored = long_store
    early = stored.on_path(UserPrompt)[5]
    before = stored.path[: stored.path.index(early)]

    fork = store.fork_conversation(stored.id, early.id)

    copied = store.load_conversation(fork.id).items
    assert [item.id for item in copied] != [item.id for item in before]  # New ids.
    for copy, item in zip(copied, before, strict=True):
        assert {**item_to_dict(copy), "id": ""} == {**item_to_dict(item), "id": ""}
    assert store.load_conversation(stored.id).all_items() == stored.every  # Left as it was.


def test_an_item_no_longer_stored_says_so_when_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "chat.sqlite3")
    stored = store_conversation(store, 2 * READ_AT_OPEN)
    conversation = store.load_conversation(stored.id)
    store.delete_conversation(stored.id)  # Behind its back: no chatui deletes what it has open.

    with pytest.raises(LookupError, match="no longer stored"):
        conversation.items[1].text  # type: ignore[union-attr]  # noqa: B018
    store.close()


# The app, on a conversation longer than what it shows


@pytest.fixture
def partly_read(store: Store) -> Stored:
    """A conversation of 150 items whose last reply has an older version."""
    return store_conversation(store, 150, retried_last=True)


async def test_ctrl_u_shows_every_item_of_a_partly_read_conversation(
    store: Store, partly_read: Stored
) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await app.open_conversation(partly_read.id)
        await pilot.press("ctrl+u")
        await wait_until(pilot, lambda: app.chat.hidden_items == 0)

        chat = app.chat
        assert [view.item_id for view in chat.query(UserMessage)] == [
            prompt.id for prompt in partly_read.on_path(UserPrompt)
        ]
        assert [view.response.text for view in chat.query(AssistantMessage)] == [
            response.text for response in partly_read.on_path(ModelResponse)
        ]


async def test_a_turn_in_a_partly_read_conversation_sends_every_earlier_item(
    store: Store, partly_read: Stored
) -> None:
    provider = ScriptedProvider(words("the answer"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await app.open_conversation(partly_read.id)
        await send(pilot, "one more")
        await wait_until(pilot, settled(app))

        sent = provider.last.request.messages
        users = [m.content for m in sent if m.role == "user"]
        assert users == [p.text for p in partly_read.on_path(UserPrompt)] + ["one more"]
        replies = [m.content for m in sent if m.role == "assistant"]
        assert replies == [r.text for r in partly_read.on_path(ModelResponse)]
        results = [m.content for m in sent if m.role == "tool"]
        assert results == [r.content for r in partly_read.on_path(ToolResult)]


async def test_a_retry_of_the_last_reply_of_a_partly_read_conversation(
    store: Store, partly_read: Stored
) -> None:
    provider = ScriptedProvider(words("again"))
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await app.open_conversation(partly_read.id)
        await press_and_settle(pilot, app, "ctrl+r")

        sent = provider.last.request.messages
        assert [m.content for m in sent if m.role == "assistant"] == [
            r.text for r in partly_read.on_path(ModelResponse)[:-1]
        ]
        last = app.chat.query(AssistantMessage).last()
        assert last.response.text == "again"
        assert str(last.border_subtitle) == "‹ 3/3 ›"

    reloaded = store.load_conversation(partly_read.id)
    versions = reloaded.versions(reloaded.items[-1])
    n = len(partly_read.on_path(UserPrompt))
    assert [v.text for v in versions] == [f"old reply {n}", f"reply {n}", "again"]  # type: ignore[union-attr]


async def test_a_version_flip_in_a_partly_read_conversation_shows_the_stored_version(
    store: Store, partly_read: Stored
) -> None:
    old = next(
        item
        for item in reversed(partly_read.every)
        if isinstance(item, ModelResponse) and item not in partly_read.path
    )
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await app.open_conversation(partly_read.id)
        last = app.chat.query(AssistantMessage).last()
        assert str(last.border_subtitle) == "‹ 2/2 ›"

        await pilot.press("alt+left")
        await wait_until(pilot, lambda: app.chat.conversation.items[-1].id == old.id)
        await pilot.pause()

        shown = app.chat.query(AssistantMessage).last()
        assert shown.response.text == old.text
        assert str(shown.border_subtitle) == "‹ 1/2 ›"
    assert store.load_conversation(partly_read.id).items[-1].id == old.id  # Kept for next time.
