"""SQLite persistence of conversations (stdlib `sqlite3`, WAL mode).

Each conversation item is one row holding its JSON. The user's prompt is
written before a request starts and a streaming reply is rewritten as it
grows, so a crash loses at most the last second of a reply; on opening, any
reply still marked `streaming` (its writer died) becomes `interrupted`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import platformdirs

from chatui.messages import (
    Conversation,
    Item,
    ModelResponse,
    ResponseState,
    item_from_dict,
    item_to_dict,
    new_id,
)

DB_ENV = "CHATUI_DB"
CRASH_NOTE = "chatui stopped before this reply finished."

# Each entry migrates the schema from version N to N + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE items (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        state TEXT,
        writer_pid INTEGER,
        data TEXT NOT NULL
    );
    CREATE INDEX items_by_conversation ON items (conversation_id, seq);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_db_path() -> Path:
    """The database path: `$CHATUI_DB`, else the platform's user data dir."""
    if env := os.environ.get(DB_ENV):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("chatui", appauthor=False)) / "chatui.sqlite3"


class StoreError(Exception):
    """The database cannot be opened or is from a newer chatui."""


class Store:
    """Conversations on disk. All methods run on the caller's thread and are quick."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self.recover_unfinished()  # Also the first query: a schema that is not ours fails here.
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the conversation store {self.path}: {error}") from None

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer chatui (schema {version}, "
                f"this one knows {SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            script = f"BEGIN; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
            try:
                self._db.executescript(script)
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def recover_unfinished(self) -> int:
        """Mark replies left `streaming` by a process that has died as interrupted."""
        rows = self._db.execute(
            "SELECT data, writer_pid FROM items WHERE kind = 'response' AND state = ?",
            (ResponseState.STREAMING.value,),
        ).fetchall()
        dead = [data for data, pid in rows if not _alive(pid)]
        for data in dead:
            response = item_from_dict(json.loads(data))
            assert isinstance(response, ModelResponse)
            response.state = ResponseState.INTERRUPTED
            response.finish_reason = "cancelled"
            response.error = CRASH_NOTE
            self._write_item(response)
        return len(dead)

    # Conversations

    def create_conversation(self, title: str = "New conversation") -> Conversation:
        conversation = Conversation(id=new_id(), title=title)
        now = time.time()
        self._db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES (?, ?, ?, ?)",
            (conversation.id, title, now, now),
        )
        return conversation

    def list_conversations(self) -> list[tuple[str, str]]:
        """(id, title) pairs, most recently updated first."""
        return list(
            self._db.execute(
                "SELECT id, title FROM conversations ORDER BY updated DESC, rowid DESC"
            )
        )

    def load_conversation(self, conversation_id: str) -> Conversation:
        row = self._db.execute(
            "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        items = [
            item_from_dict(json.loads(data))
            for (data,) in self._db.execute(
                "SELECT data FROM items WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            )
        ]
        return Conversation(id=conversation_id, title=row[0], items=items)

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self._db.execute(
            "UPDATE conversations SET title = ?, updated = ? WHERE id = ?",
            (title, time.time(), conversation_id),
        )

    def delete_conversation(self, conversation_id: str) -> None:
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # Items

    def save_item(self, conversation_id: str, item: Item) -> None:
        """Insert `item` at the end of the conversation, or rewrite it in place."""
        with self._db:
            self._db.execute("BEGIN")
            self._write_item(item, conversation_id)
            self._db.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id)
            )

    def _write_item(self, item: Item, conversation_id: str | None = None) -> None:
        data = json.dumps(item_to_dict(item))
        state = item.state.value if isinstance(item, ModelResponse) else None
        writer = os.getpid() if state == ResponseState.STREAMING.value else None
        updated = self._db.execute(
            "UPDATE items SET data = ?, state = ?, writer_pid = ? WHERE id = ?",
            (data, state, writer, item.id),
        )
        if updated.rowcount == 0 and conversation_id is not None:
            self._db.execute(
                "INSERT INTO items (id, conversation_id, seq, kind, state, writer_pid, data) "
                "VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items"
                " WHERE conversation_id = ?), ?, ?, ?, ?)",
                (item.id, conversation_id, conversation_id, item.kind, state, writer, data),
            )


def _alive(pid: int | None) -> bool:
    """Whether process `pid` still runs (so its streaming reply is not abandoned)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # It exists but belongs to someone else.
    return True
