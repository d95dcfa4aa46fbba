"""The store against what an outside tester throws at it: damaged rows, threads, hostile queries."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from chatui import lazy_items
from chatui.export_command import export_main
from chatui.messages import Item, ModelResponse, ResponseState, UserPrompt, item_to_dict
from chatui.store import MIGRATIONS, READ_AT_OPEN, Store, match_expression
from tests.support.app import make_app, wait_until
from tests.support.scripted import ScriptedProvider


def reply(text: str) -> ModelResponse:
    response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    response.append_text(text)
    return response


def long_conversation(store: Store, exchanges: int) -> tuple[str, list[Item]]:
    """A conversation of `exchanges` prompts and replies, released; its id and items."""
    conversation = store.create_conversation("long")
    items: list[Item] = []
    for n in range(exchanges):
        for item in (UserPrompt(f"prompt {n}"), reply(f"reply {n}")):
            store.save_item(conversation.id, item)
            items.append(item)
    store.release_conversation(conversation.id)
    return conversation.id, items


def old_store(path: Path, version: int, rows: list[tuple[str, str, str, str]]) -> None:
    """A store of schema `version` holding `rows` (conversation id, item id, kind, data)."""
    with sqlite3.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:version]):
            db.executescript(f"{script}; PRAGMA user_version = {number + 1};")
        for conversation_id in dict.fromkeys(row[0] for row in rows):
            db.execute(
                "INSERT INTO conversations (id, title, created, updated) VALUES (?, ?, 0, 0)",
                (conversation_id, f"title {conversation_id}"),
            )
        for seq, (conversation_id, item_id, kind, data) in enumerate(rows):
            db.execute(
                "INSERT INTO items (id, conversation_id, seq, kind, state, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    item_id,
                    conversation_id,
                    seq,
                    kind,
                    "complete" if kind == "response" else None,
                    data,
                ),
            )
    db.close()


def as_row(conversation_id: str, item: Item) -> tuple[str, str, str, str]:
    return (conversation_id, item.id, item.kind, json.dumps(item_to_dict(item)))


DAMAGED = '{"kind": "response", "text": "cut off mid-wri'


@pytest.mark.parametrize("version", [5, 6])
def test_a_store_with_a_damaged_row_still_opens_after_the_update(
    tmp_path: Path, version: int
) -> None:
    """A row of bad JSON (a disk error, a hand edit) made `json_extract` fail the update's
    one transaction: this chatui could not open the store at all, every conversation lost
    to it, where the chatui before it opened it and failed only on that conversation."""
    path = tmp_path / "old.sqlite3"
    good = reply("still readable")
    old_store(
        path,
        version,
        [
            ("damaged", "p1", "prompt", '{"kind": "prompt", "te'),
            ("damaged", "r1", "response", DAMAGED),
            *[as_row("fine", item) for item in (UserPrompt("a question"), good)],
        ],
    )

    store = Store(path)

    assert [hit.conversation_id for hit in store.search("readable")] == ["fine"]
    assert store.load_conversation("fine").all_items()[-1] == good
    store.delete_conversation("damaged")  # Its rows are left out of the index, not in the way.
    assert not store.exists("damaged")
    store.close()


def test_a_conversation_with_a_damaged_row_can_still_be_deleted_or_rewritten(
    store: Store,
) -> None:
    """The index triggers read every written or deleted row through `json_extract`."""
    conversation_id, items = long_conversation(store, 2)
    store._db.execute("UPDATE items SET data = ? WHERE id = ?", (DAMAGED, items[1].id))

    store.save_item(conversation_id, items[1])  # Written again, whole: readable again.
    assert store.load_conversation(conversation_id).items[1] == items[1]
    store._db.execute("UPDATE items SET data = ? WHERE id = ?", (DAMAGED, items[3].id))
    store.delete_conversation(conversation_id)

    assert not store.exists(conversation_id)
    assert store.search("prompt") == []


def test_an_unread_item_that_cannot_be_read_says_so_at_every_read(store: Store) -> None:
    """A row this chatui cannot make an item of (a field from a newer chatui, say) among the
    unread items: the first read raised after the item had been taken off the unread ones,
    and every later read of it recursed until Python gave up (RecursionError)."""
    conversation_id, items = long_conversation(store, READ_AT_OPEN)
    newer = json.dumps({**item_to_dict(items[1]), "from_a_newer_chatui": 1})
    store._db.execute("UPDATE items SET data = ? WHERE id = ?", (newer, items[1].id))
    conversation = store.load_conversation(conversation_id)
    damaged, later = conversation.items[1], conversation.items[3]

    for _ in range(2):
        with pytest.raises(
            ValueError, match="damaged data for 1 of its items"
        ):  # As a row read at once.
            damaged.text  # type: ignore[union-attr]  # noqa: B018
    assert later.text == "reply 1"  # type: ignore[union-attr]
    assert later == items[3]


def test_a_stand_in_read_by_two_threads_at_once_reads_as_its_item_in_both(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export or a tool reads the conversation on a worker thread while the screen reads it
    on the loop's. When the other thread asked while the first was between taking an item
    off the unread ones and filling it in, it found nothing left to read and recursed."""
    conversation_id, items = long_conversation(store, READ_AT_OPEN)
    conversation = store.load_conversation(conversation_id)
    first = conversation.items[1]
    parsing, go_on, asking = threading.Event(), threading.Event(), threading.Event()
    parse = lazy_items.item_from_dict

    def slow_parse(data: dict[str, Any]) -> Item:
        if data["id"] == first.id and threading.current_thread() is not threading.main_thread():
            parsing.set()
            assert go_on.wait(10)
        return parse(data)

    monkeypatch.setattr(lazy_items, "item_from_dict", slow_parse)
    lazy: Any = first.__dict__["_lazy"]
    held = getattr(lazy, "_lock", None)

    class Asked:
        """The lock, saying when the second reader waits on it."""

        def __enter__(self) -> None:
            if threading.current_thread() is threading.main_thread():
                asking.set()
            assert held is not None
            held.__enter__()

        def __exit__(self, *exc: object) -> None:
            assert held is not None
            held.__exit__(*exc)

    if held is not None:
        lazy._lock = Asked()
    seen: list[object] = []
    reader = threading.Thread(
        target=lambda: seen.append([item_to_dict(item) for item in conversation.all_items()])
    )
    reader.start()
    assert parsing.wait(10)
    threading.Thread(target=lambda: asking.wait(10) and go_on.set()).start()

    try:
        assert first.text == "reply 0"  # type: ignore[union-attr]
    finally:
        go_on.set()
        reader.join(10)
    assert seen == [[item_to_dict(item) for item in items]]


def test_exporting_a_long_conversation_with_an_early_damaged_item_says_so_in_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read at once, a damaged item ends the export with a sentence; read on first use, it
    must too, not with a traceback (nor a RecursionError)."""
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation_id, items = long_conversation(store, READ_AT_OPEN)
    newer = json.dumps({**item_to_dict(items[1]), "from_a_newer_chatui": 1})
    store._db.execute("UPDATE items SET data = ? WHERE id = ?", (newer, items[1].id))
    store.close()

    assert export_main([conversation_id, "--db", str(path)]) == 2

    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "chatui export: that conversation could not be read:"
        " the store holds damaged data for it.\n",
    )


def test_an_item_made_from_an_unread_one_by_replace_is_an_item(store: Store) -> None:
    """`dataclasses.replace` calls the stand-in's class: given every field, it read none, and
    the new object was a stand-in with nothing to read (KeyError, then RecursionError)."""
    conversation_id, items = long_conversation(store, READ_AT_OPEN)
    unread = store.load_conversation(conversation_id).items[1]
    original = items[1]
    every = {f.name: getattr(original, f.name) for f in dataclasses.fields(original) if f.init}

    made = dataclasses.replace(unread, **every)

    assert type(made) is ModelResponse
    assert made == original and made.text == "reply 0"


async def test_a_damaged_latest_conversation_neither_stops_the_start_nor_its_opening(
    store: Store,
) -> None:
    """The store raised a JSON or type error the session let through: the app ended with a
    traceback instead of saying, in a sentence, that this one conversation is unreadable."""
    conversation_id, items = long_conversation(store, 2)
    newer = json.dumps({**item_to_dict(items[-1]), "from_a_newer_chatui": 1})
    store._db.execute("UPDATE items SET data = ? WHERE id = ?", (newer, items[-1].id))
    store.set_leaf(conversation_id, items[-1].id)
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        opened = app.chat.conversation.id
        await app.open_conversation(conversation_id)
        await wait_until(pilot, lambda: bool(app._notifications))

        (notice,) = [n.message for n in app._notifications]
        assert notice.startswith("The conversation could not be opened")
        assert app.chat.conversation.id == opened


def test_a_store_whose_crashed_reply_is_damaged_still_opens(tmp_path: Path) -> None:
    """Opening recovers the replies a dead chatui left streaming: one that was not JSON raised
    a JSON error from `Store()`, not even a StoreError, at every start."""
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation_id, items = long_conversation(store, 1)
    store._db.execute(
        "UPDATE items SET data = ?, state = 'streaming', writer = 'dead' WHERE id = ?",
        (DAMAGED, items[1].id),
    )
    store.close()

    reopened = Store(path)

    assert reopened.exists(conversation_id)
    (state,) = reopened._db.execute(
        "SELECT state FROM items WHERE id = ?", (items[1].id,)
    ).fetchone()
    assert state == "interrupted"  # Not looked at again at the next start.
    reopened.close()


def test_a_word_repeated_in_a_search_is_looked_up_once() -> None:
    """A text pasted into the list's filter repeats its words: each copy was one more walk of
    the index, at every key (a 10,000-character paste of a few words: 0.35 s a key at 12,000
    items)."""
    assert match_expression("the cat and the hat and the") == '"the" "cat" "and" "hat" "the" *'
    assert match_expression("a " * 5000) == '"a"'
