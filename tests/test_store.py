"""The SQLite store: round trips, schema versions, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatui.messages import (
    BranchOrigin,
    ModelRef,
    ModelResponse,
    ResponseState,
    TextPart,
    ToolCallPart,
    ToolResult,
    Usage,
    UserPrompt,
    item_to_dict,
)
from chatui.store import (
    CRASH_NOTE,
    MIGRATIONS,
    RECOVERY_QUERY,
    SCHEMA_VERSION,
    Store,
    StoreError,
    default_db_path,
)

ROOT = Path(__file__).resolve().parent.parent


def test_items_round_trip_in_order(store: Store) -> None:
    conversation = store.create_conversation("first")
    prompt = UserPrompt("hi")
    response = ModelResponse(
        "p",
        "m",
        parts=[TextPart("x"), ToolCallPart("c1", "t", '{"a"', complete=False)],
        state=ResponseState.INTERRUPTED,
        finish_reason="cancelled",
        usage=Usage(3, 4, estimated=True),
    )
    result = ToolResult("c1", "t", "r", state="cancelled")
    for item in (prompt, response, result):
        store.save_item(conversation.id, item)

    loaded = store.load_conversation(conversation.id)

    assert loaded.title == "first"
    assert loaded.items == [prompt, response, result]


def test_rewriting_an_item_keeps_its_place(store: Store) -> None:
    conversation = store.create_conversation()
    response = ModelResponse("p", "m")
    store.save_item(conversation.id, UserPrompt("a"))
    store.save_item(conversation.id, response)
    store.save_item(conversation.id, UserPrompt("b"))
    response.append_text("grown")
    store.save_item(conversation.id, response)

    items = store.load_conversation(conversation.id).items

    assert [getattr(i, "text", None) for i in items] == ["a", "grown", "b"]


def test_conversations_list_rename_delete(store: Store) -> None:
    a = store.create_conversation("a")
    b = store.create_conversation("b")
    store.save_item(a.id, UserPrompt("newest activity"))

    assert [title for _, title in store.list_conversations()] == ["a", "b"]
    store.rename_conversation(b.id, "bee")
    assert dict(store.list_conversations())[b.id] == "bee"
    store.delete_conversation(a.id)
    assert [cid for cid, _ in store.list_conversations()] == [b.id]
    with pytest.raises(KeyError):
        store.load_conversation(a.id)
    rows = store._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert rows == 0  # Items go with their conversation.


def test_the_list_summary_has_each_conversations_time_and_latest_model(store: Store) -> None:
    old = store.create_conversation("old")
    store.save_item(old.id, UserPrompt("q"))
    store.save_item(old.id, ModelResponse("openai", "gpt-first"))
    store.save_item(old.id, ModelResponse("anthropic", "claude-later"))
    empty = store.create_conversation("empty")
    store._db.execute("UPDATE conversations SET updated = 1 WHERE id = ?", (empty.id,))

    rows = store.summaries()

    assert [(r.id, r.title, r.last_provider, r.last_model) for r in rows] == [
        (old.id, "old", "anthropic", "claude-later"),
        (empty.id, "empty", "", ""),
    ]
    assert rows[1].updated == 1
    assert [r.id for r in store.summaries(limit=1)] == [old.id]
    assert store.latest_conversation_id() == old.id
    assert store.exists(empty.id) and not store.exists("gone")


def test_a_conversations_system_prompt_and_model_are_kept_with_it(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.sqlite3")
    conversation = first.create_conversation()
    first.set_system_prompt(conversation.id, "Answer in French.")
    first.set_model(conversation.id, ModelRef("openai", "gpt-4o-mini"))
    first.close()

    again = Store(tmp_path / "db.sqlite3")
    loaded = again.load_conversation(conversation.id)
    assert (loaded.system_prompt, loaded.model) == (
        "Answer in French.",
        ModelRef("openai", "gpt-4o-mini"),
    )
    again.set_system_prompt(conversation.id, None)
    again.set_model(conversation.id, None)
    reset = again.load_conversation(conversation.id)
    assert (reset.system_prompt, reset.model) == (None, None)
    again.close()


def test_a_store_from_before_summaries_learns_each_conversations_latest_model(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:5]):
            db.executescript(f"{script}; PRAGMA user_version = {number + 1};")
        db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 't', 0, 0)"
        )
        for seq, item in enumerate(
            (ModelResponse("openai", "older"), UserPrompt("q"), ModelResponse("local", "newer"))
        ):
            db.execute(
                "INSERT INTO items (id, conversation_id, seq, kind, state, data)"
                " VALUES (?, 'c', ?, ?, NULL, ?)",
                (item.id, seq, item.kind, json.dumps(item_to_dict(item))),
            )
    db.close()

    store = Store(path)

    [row] = store.summaries()
    assert (row.last_provider, row.last_model) == ("local", "newer")
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM conversations ORDER BY updated DESC, rowid DESC LIMIT 1"
    ).fetchall()
    assert any("conversations_by_updated" in row[-1] for row in plan), plan
    store.close()


def test_wal_mode_and_schema_version(store: Store) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_opening_the_store_finds_unfinished_replies_through_an_index_not_a_scan(
    store: Store,
) -> None:
    """So that opening costs the same with one item or a million."""
    plan = store._db.execute("EXPLAIN QUERY PLAN " + RECOVERY_QUERY).fetchall()
    steps = [row[-1] for row in plan]
    assert any("USING INDEX items_streaming" in step for step in steps), steps
    assert not any(step.startswith("SCAN items") and "INDEX" not in step for step in steps)


def test_database_from_a_newer_chatui_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match="newer chatui"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(StoreError, match="cannot open the conversation store"):
        Store(path)


def test_a_database_with_a_foreign_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as db:  # Our schema version, but not our tables' columns.
        db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, state TEXT)")
        db.execute("PRAGMA user_version = 1")

    with pytest.raises(StoreError, match=f"cannot open the conversation store {path}"):
        Store(path)


def test_db_path_comes_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATUI_DB", str(tmp_path / "env.sqlite3"))

    assert default_db_path() == tmp_path / "env.sqlite3"


def test_streaming_reply_of_a_dead_writer_becomes_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    conversation = store.create_conversation()
    response = ModelResponse("p", "m", parts=[TextPart("half")])
    store.save_item(conversation.id, response)
    store._db.execute("UPDATE items SET writer_pid = 2147483646")  # A pid that is not running.
    store.close()

    reopened = Store(path)
    (loaded,) = reopened.load_conversation(conversation.id).items
    reopened.close()

    assert loaded.state is ResponseState.INTERRUPTED
    assert loaded.error == CRASH_NOTE
    assert loaded.text == "half"


def test_streaming_reply_of_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    writer = Store(path)
    conversation = writer.create_conversation()
    writer.save_item(conversation.id, ModelResponse("p", "m", parts=[TextPart("live")]))

    reader = Store(path)  # A second chatui opening the same database.

    assert reader.load_conversation(conversation.id).items[0].state is ResponseState.STREAMING
    reader.close()
    writer.close()


def _die(store: Store) -> None:
    """What a crash does to an instance: its lock is released, its lock file stays behind."""
    os.close(store._lock)
    store._lock = None


@pytest.mark.parametrize("writer_pid", [os.getpid(), 1], ids=["our-pid", "pid-1"])
def test_streaming_reply_of_a_closed_instance_with_a_live_pid_is_recovered(
    tmp_path: Path, writer_pid: int
) -> None:
    path = tmp_path / "db.sqlite3"
    writer = Store(path)
    conversation = writer.create_conversation()
    writer.save_item(conversation.id, ModelResponse("p", "m", parts=[TextPart("half")]))
    writer._db.execute("UPDATE items SET writer_pid = ?", (writer_pid,))  # Running, or reused.
    writer.close()

    reopened = Store(path)
    (loaded,) = reopened.load_conversation(conversation.id).items
    reopened.close()

    assert loaded.state is ResponseState.INTERRUPTED
    assert loaded.error == CRASH_NOTE


def test_streaming_reply_of_a_crashed_instance_in_a_live_process_is_recovered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    writer = Store(path)
    conversation = writer.create_conversation()
    writer.save_item(conversation.id, ModelResponse("p", "m", parts=[TextPart("half")]))
    _die(writer)  # Its lock file is still there, but nobody holds the lock.

    reopened = Store(path)
    (loaded,) = reopened.load_conversation(conversation.id).items
    reopened.close()

    assert loaded.state is ResponseState.INTERRUPTED


def test_streaming_reply_from_schema_1_with_a_live_pid_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    reply = ModelResponse("p", "m", parts=[TextPart("old")])
    with sqlite3.connect(path) as db:
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
        db.execute("INSERT INTO conversations VALUES ('c', 'old', 0, 0)")
        db.execute(
            "INSERT INTO items (id, conversation_id, seq, kind, state, writer_pid, data)"
            " VALUES (?, 'c', 1, 'response', 'streaming', ?, ?)",
            (reply.id, os.getpid(), json.dumps(item_to_dict(reply))),
        )

    store = Store(path)
    (loaded,) = store.load_conversation("c").items
    version = store._db.execute("PRAGMA user_version").fetchone()[0]
    store.close()

    assert version == SCHEMA_VERSION
    assert loaded.state is ResponseState.INTERRUPTED
    assert loaded.text == "old"


def test_each_open_store_holds_its_own_lock_file_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    writers = tmp_path / "db.sqlite3.writers"
    first, second = Store(path), Store(path)

    assert sorted(writers.iterdir()) == sorted(
        writers / f"{s.instance_id}.lock" for s in (first, second)
    )
    first.close()
    assert list(writers.iterdir()) == [writers / f"{second.instance_id}.lock"]
    second.close()
    assert list(writers.iterdir()) == []


def test_lock_files_of_crashed_instances_are_removed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    crashed, running = Store(path), Store(path)
    _die(crashed)

    Store(path).close()

    assert list((tmp_path / "db.sqlite3.writers").iterdir()) == [
        tmp_path / "db.sqlite3.writers" / f"{running.instance_id}.lock"
    ]
    running.close()


def test_an_in_memory_store_writes_no_lock_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store(":memory:")
    conversation = store.create_conversation()
    store.save_item(conversation.id, ModelResponse("p", "m"))

    assert store.load_conversation(conversation.id).items[0].state is ResponseState.STREAMING
    assert list(tmp_path.iterdir()) == []
    store.close()


def _partial_reply(path: Path) -> str:
    """The streamed reply text as another process sees it ('' before it exists)."""
    try:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT data FROM items WHERE kind = 'response'").fetchone()
    except sqlite3.OperationalError:
        return ""  # The schema is not written yet.
    parts = json.loads(row[0])["parts"] if row else []
    return "".join(p["text"] for p in parts if p["kind"] == "text")


def test_sigkill_mid_stream_keeps_prompt_and_partial_reply(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # So that `tests.support` imports.
    argv = [sys.executable, "-m", "tests.support.crash_target", str(path)]
    process = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while not text.startswith("word0 word1 "):  # The first flush after a second of streaming.
            assert time.monotonic() < deadline, "no partial reply was flushed"
            with pytest.raises(subprocess.TimeoutExpired):  # It must still be streaming.
                process.wait(timeout=0.05)
            text = _partial_reply(path) if path.exists() else ""
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    store = Store(path)
    ((conversation_id, _),) = store.list_conversations()
    prompt, response = store.load_conversation(conversation_id).items
    store.close()

    assert isinstance(prompt, UserPrompt) and prompt.text == "tell me a long story"
    assert isinstance(response, ModelResponse)
    assert response.state is ResponseState.INTERRUPTED
    assert response.text.startswith(text)


def test_a_draft_and_a_setting_outlive_the_store_and_leave_the_order_alone(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    first = Store(path)
    older, newer = first.create_conversation("older"), first.create_conversation("newer")
    first.rename_conversation(newer.id, "newer")  # The most recently updated.
    first.save_draft(older.id, "half a question\nsecond line")
    first.set_setting("theme", "nord")
    first.set_setting("theme", "gruvbox")
    first.close()

    reopened = Store(path)
    assert reopened.load_draft(older.id) == "half a question\nsecond line"
    assert reopened.load_draft(newer.id) == ""
    assert reopened.get_setting("theme") == "gruvbox" and reopened.get_setting("other") is None
    assert [title for _id, title in reopened.list_conversations()] == ["newer", "older"]
    reopened.save_draft(older.id, "")
    reopened.delete_conversation(older.id)
    assert reopened.load_draft(older.id) == ""
    reopened.close()


def test_a_database_of_the_previous_schema_gains_drafts_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; PRAGMA user_version = 2;")
        db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 't', 0, 0)"
        )
    store = Store(path)
    assert store.load_draft("c") == ""
    store.save_draft("c", "kept")
    assert store.load_draft("c") == "kept"
    store.close()


def test_startup_reopens_the_latest_conversation_when_it_holds_a_draft(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    first = Store(path)
    talked = first.open_startup_conversation()
    first.save_item(talked.id, UserPrompt("hello"))
    first.save_draft(talked.id, "and then")
    first.close()

    second = Store(path)
    assert second.open_startup_conversation().id == talked.id
    second.save_draft(talked.id, "")
    second.close()

    third = Store(path)
    assert third.open_startup_conversation().id != talked.id  # No draft: a new one.
    third.close()


# Schema 4: versions, forks and the queue


def _schema_3_database(path: Path, rows: list[tuple[str, int, object]]) -> None:
    """A database as schema 3 wrote it: conversation 'c', with (id, seq, item) rows."""
    with sqlite3.connect(path) as db:
        db.executescript(
            f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; {MIGRATIONS[2]}; PRAGMA user_version = 3;"
        )
        db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 'old', 0, 0)"
        )
        for item_id, seq, item in rows:
            db.execute(
                "INSERT INTO items (id, conversation_id, seq, kind, state, data)"
                " VALUES (?, 'c', ?, ?, ?, ?)",
                (
                    item_id,
                    seq,
                    item.kind,
                    getattr(item, "state", None),
                    json.dumps(item_to_dict(item)),
                ),
            )


def test_a_schema_3_database_migrates_and_shows_each_conversation_as_before(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    items = [
        UserPrompt("a"),
        ModelResponse("p", "m", parts=[TextPart("A")], state=ResponseState.COMPLETE),
        UserPrompt("b"),
        ModelResponse("p", "m", parts=[TextPart("B")], state=ResponseState.INTERRUPTED),
    ]
    seqs = [1, 2, 5, 6]  # Gaps where refused prompts were deleted.
    _schema_3_database(path, [(item.id, seq, item) for item, seq in zip(items, seqs, strict=True)])

    store = Store(path)
    loaded = store.load_conversation("c")
    version = store._db.execute("PRAGMA user_version").fetchone()[0]

    assert version == SCHEMA_VERSION
    assert loaded.items == items
    assert [loaded.parent_of(item.id) for item in items] == [None, *(i.id for i in items[:-1])]
    assert all(loaded.versions(item) == [item] for item in items)
    store.save_item("c", follow_up := UserPrompt("c"))  # Appended after the last, as before.
    assert store.load_conversation("c").items == [*items, follow_up]
    store.close()


def test_a_schema_3_conversation_with_repeated_tool_call_ids_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    items: list = []
    for n in range(2):  # A server that numbers its calls from 0 in each reply.
        items += [
            UserPrompt(f"list files {n}"),
            ModelResponse(
                "p",
                "m",
                parts=[ToolCallPart("call_0", "list_files", "{}", complete=True)],
                state=ResponseState.COMPLETE,
                finish_reason="tool_calls",
            ),
            ToolResult("call_0", "list_files", f"files {n}"),
            ModelResponse("p", "m", parts=[TextPart(f"done {n}")], state=ResponseState.COMPLETE),
        ]
    _schema_3_database(path, [(item.id, seq, item) for seq, item in enumerate(items, 1)])

    store = Store(path)
    loaded = store.load_conversation("c")
    store.close()

    assert loaded.items == items
    assert [loaded.parent_of(item.id) for item in items[1:]] == [item.id for item in items[:-1]]


def test_queued_messages_keep_their_order_edits_and_removals_across_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation, other = store.create_conversation("here"), store.create_conversation("other")
    store.rename_conversation(other.id, "other")  # The most recently updated.
    first = store.queue_message(conversation.id, "first")
    second = store.queue_message(conversation.id, "second")
    third = store.queue_message(conversation.id, "third")
    store.queue_message(other.id, "elsewhere")
    assert store.edit_queued(second.id, "second, edited")
    assert store.remove_queued(first.id)
    store.close()

    store = Store(path)
    assert [(m.id, m.text) for m in store.load_queue(conversation.id)] == [
        (second.id, "second, edited"),
        (third.id, "third"),
    ]
    assert [title for _, title in store.list_conversations()] == ["other", "here"]
    assert not store.remove_queued(first.id) and not store.edit_queued(first.id, "gone")
    store.close()


def test_a_queued_message_sent_is_a_prompt_of_its_id_and_leaves_the_queue(store: Store) -> None:
    conversation = store.create_conversation()
    message = store.queue_message(conversation.id, "and then?")
    store.queue_message(conversation.id, "later")

    prompt = message.prompt()
    store.save_item(conversation.id, prompt)
    store.save_item(conversation.id, prompt)  # Sent twice (Enter and Esc in one read): one prompt.

    assert [m.text for m in store.load_queue(conversation.id)] == ["later"]
    assert store.load_conversation(conversation.id).items == [
        UserPrompt("and then?", id=message.id)
    ]
    assert not store.edit_queued(message.id, "too late")  # An edit after the send changes nothing.


@pytest.mark.parametrize(
    "failing", ["BEFORE INSERT ON items", "BEFORE DELETE ON queued"], ids=["prompt", "dequeue"]
)
def test_a_queued_message_whose_send_fails_is_still_queued_and_not_sent(
    store: Store, failing: str
) -> None:
    conversation = store.create_conversation()
    message = store.queue_message(conversation.id, "keep me")
    store._db.execute(  # One of the send's two writes fails, as on a full disk.
        f"CREATE TEMP TRIGGER full {failing}"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )

    with pytest.raises(sqlite3.Error, match="disk is full"):
        store.save_item(conversation.id, message.prompt())

    assert store.load_queue(conversation.id) == [message]
    assert store.load_conversation(conversation.id).all_items() == []
    store._db.execute("DROP TRIGGER full")
    store.save_item(conversation.id, message.prompt())
    assert store.load_queue(conversation.id) == []
    assert [item.id for item in store.load_conversation(conversation.id).items] == [message.id]


def test_deleting_a_conversation_deletes_its_queue(store: Store) -> None:
    doomed, kept = store.create_conversation(), store.create_conversation()
    store.queue_message(doomed.id, "never sent")
    store.queue_message(kept.id, "still here")

    store.delete_conversation(doomed.id)

    assert store._db.execute("SELECT text FROM queued").fetchall() == [("still here",)]


def test_startup_reopens_the_latest_conversation_when_it_has_a_queue(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    first = Store(path)
    talked = first.open_startup_conversation()
    first.save_item(talked.id, UserPrompt("hello"))
    message = first.queue_message(talked.id, "typed while it streamed")
    first.close()

    second = Store(path)
    assert second.open_startup_conversation().id == talked.id
    assert second.remove_queued(message.id)
    second.close()

    third = Store(path)
    assert third.open_startup_conversation().id != talked.id  # Nothing queued: a new one.
    third.close()


def _rows(store: Store, conversation_id: str) -> list[tuple]:
    """Every stored row of a conversation, byte for byte."""
    db = store._db
    return [
        *db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)),
        *db.execute(
            "SELECT * FROM items WHERE conversation_id = ? ORDER BY rowid", (conversation_id,)
        ),
        *db.execute(
            "SELECT * FROM queued WHERE conversation_id = ? ORDER BY rowid", (conversation_id,)
        ),
    ]


def test_a_fork_copies_the_path_before_the_edited_prompt_and_leaves_the_original_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    original = store.create_conversation("Plans")
    call = ToolCallPart("call_0", "read_file", '{"path": "a"}', complete=True)
    p1 = UserPrompt("one")
    r1 = ModelResponse("p", "m", parts=[call], state=ResponseState.COMPLETE)
    t1 = ToolResult("call_0", "read_file", "contents")
    r1b = ModelResponse("p", "m", parts=[TextPart("read it")], state=ResponseState.COMPLETE)
    p2 = UserPrompt("two")
    r2 = ModelResponse("p", "m", parts=[TextPart("2")], state=ResponseState.COMPLETE)
    for item in (p1, r1, t1, r1b, p2, r2):
        store.save_item(original.id, item)
    other_version = ModelResponse("p", "m", parts=[TextPart("other")])
    store.save_item(original.id, other_version, parent=p1.id)  # Not on the edited path.
    store.set_leaf(original.id, r2.id)
    store.save_draft(original.id, "a draft")
    store.queue_message(original.id, "queued")
    before = _rows(store, original.id)

    fork = store.fork_conversation(original.id, p2.id)

    assert _rows(store, original.id) == before
    assert fork.id != original.id and fork.title == "Plans (branch)"
    assert fork.branched_from == BranchOrigin(original.id, "Plans")
    copies = fork.items
    assert [item_to_dict(c) | {"id": ""} for c in copies] == [
        item_to_dict(i) | {"id": ""} for i in (p1, r1, t1, r1b)
    ]
    assert not {c.id for c in copies} & {i.id for i in (p1, r1, t1, r1b, other_version)}
    assert copies[1].tool_calls[0].id == "call_0" and copies[2].call_id == "call_0"
    assert store.claim_conversation(fork.id) and store.load_queue(fork.id) == []
    store.close()

    store = Store(path)
    loaded = store.load_conversation(fork.id)
    assert loaded.items == copies and loaded.all_items() == copies
    assert [loaded.parent_of(c.id) for c in copies] == [None, *(c.id for c in copies[:-1])]
    assert loaded.branched_from == BranchOrigin(original.id, "Plans")
    assert store.fork_conversation(fork.id, copies[3].id).title == "Plans (branch)"
    assert store.fork_conversation(original.id, p1.id).items == []  # Before the first prompt.
    with pytest.raises(KeyError):
        store.fork_conversation(original.id, "no such item")
    store.close()


def _migration_4_steps(items: int) -> int:
    """SQLite's VM steps (counted by a progress handler) for migration 4 over `items` items."""
    with sqlite3.connect(":memory:") as db:
        db.executescript(f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; {MIGRATIONS[2]};")
        db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 't', 0, 0)"
        )
        db.executemany(
            "INSERT INTO items (id, conversation_id, seq, kind, data)"
            " VALUES (?, 'c', ?, 'prompt', '{}')",
            [(f"i{seq}", seq) for seq in range(1, items + 1)],
        )
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        db.set_progress_handler(step, 100)
        db.executescript(MIGRATIONS[3])
        parents = dict(db.execute("SELECT id, parent FROM items"))
        assert parents["i1"] is None and parents[f"i{items}"] == f"i{items - 1}"
        return steps


def test_migrating_a_long_conversation_takes_work_in_proportion_to_its_length() -> None:
    """Each item found its parent by scanning the items before it: a 10,000-item
    conversation took seconds to migrate on the first start after an upgrade."""
    assert _migration_4_steps(4000) < 3 * _migration_4_steps(2000)
