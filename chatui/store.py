"""SQLite persistence of conversations (stdlib `sqlite3`, WAL mode).

Each conversation item is one row holding its JSON. The user's prompt is
written before a request starts and a streaming reply is rewritten as it
grows, so a crash loses at most the last second of a reply; on opening, any
reply still marked `streaming` whose writer is dead becomes `interrupted`.

Liveness: every open `Store` (one per running chatui) has a random instance id
and holds an exclusive `flock` on `<db name>.writers/<instance id>.lock` for its
whole life. Streaming replies record their writer's instance id and each
conversation its owner's; an instance is alive only if its lock file exists and
we cannot lock it. The kernel drops the lock when a process dies however it
dies, and unlike a PID a random id is never reused. Replies with no writer id
(from schema 1) count as dead. Without `fcntl` (Windows) the recorded PID is
checked instead. Each instance writes only into conversations it owns: see
`claim_conversation` and `open_startup_conversation`.

Versions: each item row names its parent (the item before it on its path), so
a conversation is a tree whose siblings are versions (a retried reply, an
edited prompt), and each conversation row names its `leaf`, the last item of
the path shown. A conversation loads in one query over its items and is built
in Python (`Conversation.from_tree`). Messages typed while a reply streams wait
in `queued` until they are sent, which turns each into a prompt of the same id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final, Literal

try:
    import fcntl
except ImportError:  # Windows: liveness falls back to PIDs.
    fcntl = None  # type: ignore[assignment]  # A module or None: checked before each use.

import platformdirs

from chatui.messages import (
    BranchOrigin,
    Conversation,
    Item,
    ModelRef,
    ModelResponse,
    QueuedMessage,
    ResponseState,
    UserPrompt,
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
    """
    ALTER TABLE items ADD COLUMN writer TEXT;
    ALTER TABLE conversations ADD COLUMN owner TEXT;
    ALTER TABLE conversations ADD COLUMN owner_pid INTEGER;
    """,
    """
    ALTER TABLE conversations ADD COLUMN draft TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN view_start TEXT;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Versions, forks and the queue. An existing item's parent is the item stored
    # before it, and a conversation's leaf its last item: it loads as it did. The
    # row value comparison lets each item's parent be one search of the index.
    """
    ALTER TABLE items ADD COLUMN parent TEXT;
    UPDATE items SET parent = (
        SELECT earlier.id FROM items AS earlier
        WHERE earlier.conversation_id = items.conversation_id
          AND (earlier.seq, earlier.rowid) < (items.seq, items.rowid)
        ORDER BY earlier.seq DESC, earlier.rowid DESC LIMIT 1
    );
    ALTER TABLE conversations ADD COLUMN leaf TEXT;
    UPDATE conversations SET leaf = (
        SELECT id FROM items WHERE items.conversation_id = conversations.id
        ORDER BY seq DESC, rowid DESC LIMIT 1
    );
    ALTER TABLE conversations ADD COLUMN branched_from TEXT;
    ALTER TABLE conversations ADD COLUMN branched_title TEXT;
    CREATE TABLE queued (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX queued_by_conversation ON queued (conversation_id, seq);
    """,
    # Opening the store looks for replies a dead instance left streaming: a partial
    # index holds only those, so the search costs the same at any size of the store.
    """
    CREATE INDEX items_streaming ON items (kind) WHERE state = 'streaming';
    """,
    # Each conversation's own system prompt and model (NULL: the config's), and the
    # provider and model of its latest reply, for the list; the list reads its
    # latest conversations through an index, at any number of them.
    """
    ALTER TABLE conversations ADD COLUMN system_prompt TEXT;
    ALTER TABLE conversations ADD COLUMN provider TEXT;
    ALTER TABLE conversations ADD COLUMN model TEXT;
    ALTER TABLE conversations ADD COLUMN last_provider TEXT;
    ALTER TABLE conversations ADD COLUMN last_model TEXT;
    UPDATE conversations SET (last_provider, last_model) = (
        SELECT json_extract(data, '$.provider'), json_extract(data, '$.model') FROM items
        WHERE items.conversation_id = conversations.id AND kind = 'response'
        ORDER BY seq DESC, rowid DESC LIMIT 1
    );
    CREATE INDEX conversations_by_updated ON conversations (updated);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# The state is written out, not a parameter: only then can SQLite use `items_streaming`.
RECOVERY_QUERY = (
    "SELECT data, writer, writer_pid FROM items"
    f" WHERE kind = 'response' AND state = '{ResponseState.STREAMING.value}'"
)
BRANCH_SUFFIX = " (branch)"


class _End(Enum):
    PATH = "path"


AT_PATH_END: Final = _End.PATH
"""`save_item`'s default parent: the last item of the conversation's stored path."""


def default_db_path() -> Path:
    """The database path: `$CHATUI_DB`, else the platform's user data dir."""
    if env := os.environ.get(DB_ENV):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("chatui", appauthor=False)) / "chatui.sqlite3"


@dataclass(frozen=True)
class ConversationSummary:
    """A conversation as the list shows it: its title, when it last changed, its last model.

    `updated` is a Unix time; `last_model` is the model of its latest reply
    ("" before any).
    """

    id: str
    title: str
    updated: float
    last_provider: str = ""
    last_model: str = ""


class StoreError(Exception):
    """The database cannot be opened or is from a newer chatui."""


class Store:
    """Conversations on disk. All methods run on the caller's thread and are quick."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.instance_id = new_id()
        memory = str(path) == ":memory:"
        # No other instance can share an in-memory database, so it needs no lock file.
        self._writers = None if memory else self.path.with_name(self.path.name + ".writers")
        self._lock: int | None = None  # The descriptor holding our lock file's flock.
        self._closed = False
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self._hold_lock()
            self.recover_unfinished()  # Also the first query: a schema that is not ours fails here.
            self._remove_stale_locks()
        except (sqlite3.Error, OSError) as error:
            self._drop_lock()
            raise StoreError(f"cannot open the conversation store {self.path}: {error}") from None

    def close(self) -> None:
        """Give up this instance's conversations, close the database and drop our lock."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.execute(
                "UPDATE conversations SET owner = NULL, owner_pid = NULL WHERE owner = ?",
                (self.instance_id,),
            )
        finally:
            self._db.close()
            self._drop_lock()

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

    # Liveness of instances

    def _lock_path(self, instance_id: str) -> Path:
        assert self._writers is not None
        return self._writers / f"{instance_id}.lock"

    def _hold_lock(self) -> None:
        """Take our lock file; it is locked before it gets its name, so no one sees it free."""
        if self._writers is None or fcntl is None:
            return
        self._writers.mkdir(exist_ok=True)
        unnamed = self._writers / f"{self.instance_id}.new"
        self._lock = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(unnamed, self._lock_path(self.instance_id))

    def _drop_lock(self) -> None:
        if self._lock is None:
            return
        self._lock_path(self.instance_id).unlink(missing_ok=True)
        os.close(self._lock)  # This releases the flock.
        self._lock = None

    def _remove_stale_locks(self) -> None:
        """Delete the lock files of instances that died without closing."""
        if self._lock is None or self._writers is None:
            return
        for lock in self._writers.glob("*.lock"):
            if not self._instance_alive(lock.stem, None):
                lock.unlink(missing_ok=True)

    def _instance_alive(self, instance_id: str | None, pid: int | None) -> bool:
        """Whether chatui instance `instance_id` (which ran as process `pid`) is still open."""
        if instance_id is None:
            return False  # Written before instances had ids: its writer is gone by now.
        if instance_id == self.instance_id:
            return True
        if fcntl is None:
            return _pid_alive(pid)
        if self._writers is None:
            return False
        try:
            descriptor = os.open(self._lock_path(instance_id), os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # Not ours to inspect: assume it runs, as for a foreign PID.
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # Its owner holds the lock.
        finally:
            os.close(descriptor)  # Also drops the lock if we just took it.
        return False

    def recover_unfinished(self) -> int:
        """Mark replies left `streaming` by an instance that has died as interrupted."""
        rows = self._db.execute(RECOVERY_QUERY).fetchall()
        dead = [data for data, writer, pid in rows if not self._instance_alive(writer, pid)]
        for data in dead:
            response = item_from_dict(json.loads(data))
            assert isinstance(response, ModelResponse)
            response.state = ResponseState.INTERRUPTED
            response.finish_reason = "cancelled"
            response.error = CRASH_NOTE
            self._write_item(response)
        return len(dead)

    # Conversations and who owns them

    def create_conversation(self, title: str = "New conversation") -> Conversation:
        """A new conversation, owned by this instance."""
        conversation = Conversation(id=new_id(), title=title)
        now = time.time()
        self._db.execute(
            "INSERT INTO conversations (id, title, created, updated, owner, owner_pid)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (conversation.id, title, now, now, self.instance_id, os.getpid()),
        )
        return conversation

    def claim_conversation(self, conversation_id: str) -> bool:
        """Own the conversation unless a live other instance does; True if we own it now."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")  # Other claims wait, so only one can win.
            row = self._db.execute(
                "SELECT owner, owner_pid FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None or self._owned_by_other(row):
                return False
            self._db.execute(
                "UPDATE conversations SET owner = ?, owner_pid = ? WHERE id = ?",
                (self.instance_id, os.getpid(), conversation_id),
            )
        return True

    def release_conversation(self, conversation_id: str) -> None:
        """Give up the conversation if this instance owns it."""
        self._db.execute(
            "UPDATE conversations SET owner = NULL, owner_pid = NULL WHERE id = ? AND owner = ?",
            (conversation_id, self.instance_id),
        )

    def owned_by_other(self, conversation_id: str) -> bool:
        """Whether another chatui instance that is still running owns the conversation."""
        row = self._db.execute(
            "SELECT owner, owner_pid FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return row is not None and self._owned_by_other(row)

    def _owned_by_other(self, row: tuple[str | None, int | None]) -> bool:
        """Whether an (owner, owner_pid) row names a live instance other than this one."""
        owner, pid = row
        return owner != self.instance_id and self._instance_alive(owner, pid)

    def open_startup_conversation(self) -> Conversation:
        """The latest conversation if it is empty or holds a draft or a queue, and we can claim it.

        Else a new one. A draft or queued messages left when chatui quit are
        thus back on screen.
        """
        recent = self.list_conversations()
        if recent and self.claim_conversation(recent[0][0]):
            latest = self.load_conversation(recent[0][0])  # Loaded once it is ours: it is final.
            if not latest.items or self.load_draft(latest.id) or self.load_queue(latest.id):
                return latest
            self.release_conversation(latest.id)
        return self.create_conversation()

    def list_conversations(self) -> list[tuple[str, str]]:
        """(id, title) pairs, most recently updated first."""
        return list(
            self._db.execute(
                "SELECT id, title FROM conversations ORDER BY updated DESC, rowid DESC"
            )
        )

    def summaries(self, limit: int | None = None) -> list[ConversationSummary]:
        """The conversations as the list shows them, most recently updated first."""
        rows = self._db.execute(
            "SELECT id, title, updated, last_provider, last_model FROM conversations"
            " ORDER BY updated DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [
            ConversationSummary(id, title, updated, provider or "", model or "")
            for id, title, updated, provider, model in rows
        ]

    def latest_conversation_id(self) -> str | None:
        """The most recently updated conversation's id, or None when there is none."""
        row = self._db.execute(
            "SELECT id FROM conversations ORDER BY updated DESC, rowid DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])

    def exists(self, conversation_id: str) -> bool:
        """Whether the conversation is stored (another chatui may have deleted it)."""
        row = self._db.execute(
            "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return row is not None

    def set_system_prompt(self, conversation_id: str, text: str | None) -> None:
        """Keep the conversation's own system prompt (None: the config's from now on)."""
        self._db.execute(
            "UPDATE conversations SET system_prompt = ? WHERE id = ?", (text, conversation_id)
        )

    def set_model(self, conversation_id: str, model: ModelRef | None) -> None:
        """Keep the model the conversation answers with (None: the session's)."""
        provider, name = (None, None) if model is None else (model.provider, model.model)
        self._db.execute(
            "UPDATE conversations SET provider = ?, model = ? WHERE id = ?",
            (provider, name, conversation_id),
        )

    def load_conversation(self, conversation_id: str) -> Conversation:
        """The conversation with every version of its items, showing its stored path."""
        row = self._db.execute(
            "SELECT title, view_start, leaf, branched_from, branched_title, system_prompt,"
            " provider, model FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        title, view_start, leaf, branched_from, branched_title, system_prompt = row[:6]
        provider, model = row[6:]
        stored = [
            (item_from_dict(json.loads(data)), parent)
            for data, parent in self._db.execute(
                "SELECT data, parent FROM items WHERE conversation_id = ? ORDER BY seq, rowid",
                (conversation_id,),
            )
        ]
        origin = None if branched_from is None else BranchOrigin(branched_from, branched_title)
        return Conversation.from_tree(
            conversation_id,
            title,
            stored,
            leaf,
            view_start=view_start,
            branched_from=origin,
            system_prompt=system_prompt,
            model=None if provider is None else ModelRef(provider, model or ""),
        )

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self._db.execute(
            "UPDATE conversations SET title = ?, updated = ? WHERE id = ?",
            (title, time.time(), conversation_id),
        )

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete the conversation with its items, versions, draft and queued messages."""
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def fork_conversation(self, conversation_id: str, before_item_id: str) -> Conversation:
        """A new conversation, owned by this instance, holding the path before `before_item_id`.

        For editing an earlier prompt: the items from the first one down to the
        parent of `before_item_id` are copied with new ids (each the child of the
        copy before it; tool-call ids, results and states unchanged), and the
        original is not written to at all. The fork is titled as the original,
        with " (branch)" after it (once: a fork of a fork is not "(branch)
        (branch)"), and `branched_from` names the original by its id and title.
        Its view start follows when the item it names is copied. Raises KeyError
        when the conversation or the item is not stored.
        """
        original = self.load_conversation(conversation_id)
        before = original.parent_of(before_item_id)
        path = [] if before is None else original.path_to(before)
        copies = {item.id: _copy(item) for item in path}
        fork = Conversation(
            title=original.title
            if original.title.endswith(BRANCH_SUFFIX)
            else original.title + BRANCH_SUFFIX,
            branched_from=BranchOrigin(original.id, original.title),
            view_start=copies[original.view_start].id if original.view_start in copies else None,
        )
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO conversations (id, title, created, updated, owner, owner_pid,"
                " view_start, branched_from, branched_title) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fork.id,
                    fork.title,
                    now,
                    now,
                    self.instance_id,
                    os.getpid(),
                    fork.view_start,
                    original.id,
                    original.title,
                ),
            )
            for copy in copies.values():
                self._write_item(copy, fork.id, parent=fork.leaf)
                fork.items.append(copy)
            self._db.execute("UPDATE conversations SET leaf = ? WHERE id = ?", (fork.leaf, fork.id))
        return fork

    def set_view_start(self, conversation_id: str, item_id: str | None) -> None:
        """Keep where the model's view of the conversation starts (None: at the beginning).

        Earlier items stay stored and on screen; they are no longer sent.
        """
        self._db.execute(
            "UPDATE conversations SET view_start = ? WHERE id = ?", (item_id, conversation_id)
        )

    # Drafts: the composer's unsent text, per conversation

    def save_draft(self, conversation_id: str, text: str) -> None:
        """Keep `text` as the conversation's draft (an empty one clears it).

        The conversation's `updated` time is left alone: a draft is not activity
        that reorders the conversation list.
        """
        self._db.execute("UPDATE conversations SET draft = ? WHERE id = ?", (text, conversation_id))

    def load_draft(self, conversation_id: str) -> str:
        """The conversation's draft, or "" (also for a conversation that is gone)."""
        row = self._db.execute(
            "SELECT draft FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return str(row[0]) if row else ""

    # Settings the app keeps between runs (the theme picked in the palette)

    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # Queued messages: typed while a reply streamed, per conversation, in order

    def queue_message(self, conversation_id: str, text: str) -> QueuedMessage:
        """Queue `text` after the conversation's other queued messages.

        Like a draft, it leaves the conversation list's order alone.
        """
        message = QueuedMessage(new_id(), text)
        self._db.execute(
            "INSERT INTO queued (id, conversation_id, seq, text) VALUES (?, ?,"
            " (SELECT COALESCE(MAX(seq), 0) + 1 FROM queued WHERE conversation_id = ?), ?)",
            (message.id, conversation_id, conversation_id, text),
        )
        return message

    def edit_queued(self, message_id: str, text: str) -> bool:
        """Replace a queued message's text; False if it is no longer queued (sent or removed)."""
        return (
            self._db.execute("UPDATE queued SET text = ? WHERE id = ?", (text, message_id)).rowcount
            == 1
        )

    def remove_queued(self, message_id: str) -> bool:
        """Take a message out of the queue unsent; False if it was no longer queued."""
        return self._db.execute("DELETE FROM queued WHERE id = ?", (message_id,)).rowcount == 1

    def load_queue(self, conversation_id: str) -> list[QueuedMessage]:
        """The conversation's queued messages, first queued first."""
        return [
            QueuedMessage(message_id, text)
            for message_id, text in self._db.execute(
                "SELECT id, text FROM queued WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            )
        ]

    # Items

    def save_item(
        self,
        conversation_id: str,
        item: Item,
        parent: str | Literal[_End.PATH] | None = AT_PATH_END,
    ) -> None:
        """Store a new item as the child of `parent`, or rewrite a stored one in place.

        A new item goes after `parent` (None: a first item; by default the last
        item of the stored path, as a conversation without versions always
        did) and becomes the end of the stored path. Pass
        `parent=conversation.parent_of(item.id)` to store a new version made
        with `Conversation.rewind_to`. An item already stored (the same id: a
        streaming reply rewritten, a reply continued) keeps its parent, its
        place and the path as they are: `parent` is then ignored.

        A prompt with the id of a queued message is that message sent: the
        queued message is removed in the same transaction, so a failed save
        leaves it queued. Raises KeyError if `parent` is not an item of the
        conversation.
        """
        with self._db:
            self._db.execute("BEGIN")
            if isinstance(item, UserPrompt):
                self._db.execute("DELETE FROM queued WHERE id = ?", (item.id,))
            if self._write_item(item, conversation_id, parent):
                self._db.execute(
                    "UPDATE conversations SET updated = ?, leaf = ? WHERE id = ?",
                    (time.time(), item.id, conversation_id),
                )
            else:
                self._db.execute(
                    "UPDATE conversations SET updated = ? WHERE id = ?",
                    (time.time(), conversation_id),
                )
            if isinstance(item, ModelResponse):
                self._db.execute(
                    "UPDATE conversations SET last_provider = ?, last_model = ? WHERE id = ?",
                    (item.provider, item.model, conversation_id),
                )

    def set_leaf(self, conversation_id: str, item_id: str | None) -> None:
        """Keep the path shown: the one ending at `item_id` (None: nothing shown).

        Call it after `Conversation.select` with `conversation.leaf`, so the
        version shown is the one shown after a restart. It leaves the
        conversation list's order alone. Raises KeyError if `item_id` is not an
        item of the conversation.
        """
        if item_id is not None:
            self._check_item(conversation_id, item_id)
        self._db.execute(
            "UPDATE conversations SET leaf = ? WHERE id = ?", (item_id, conversation_id)
        )

    def delete_item(self, item_id: str) -> None:
        """Forget one item (a prompt that was refused before anything was sent).

        Whatever followed it now follows its parent, and a path that ended at
        it ends at its parent.
        """
        with self._db:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT parent FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return
            self._db.execute("UPDATE items SET parent = ? WHERE parent = ?", (row[0], item_id))
            self._db.execute("UPDATE conversations SET leaf = ? WHERE leaf = ?", (row[0], item_id))
            self._db.execute("DELETE FROM items WHERE id = ?", (item_id,))

    def _check_item(self, conversation_id: str, item_id: str) -> None:
        found = self._db.execute(
            "SELECT 1 FROM items WHERE id = ? AND conversation_id = ?", (item_id, conversation_id)
        ).fetchone()
        if found is None:
            raise KeyError(item_id)

    def _write_item(
        self,
        item: Item,
        conversation_id: str | None = None,
        parent: str | Literal[_End.PATH] | None = AT_PATH_END,
    ) -> bool:
        """Rewrite `item` in place, else insert it into `conversation_id`; True if inserted."""
        data = json.dumps(item_to_dict(item))
        state = item.state.value if isinstance(item, ModelResponse) else None
        streaming = state == ResponseState.STREAMING.value
        writer, pid = (self.instance_id, os.getpid()) if streaming else (None, None)
        updated = self._db.execute(
            "UPDATE items SET data = ?, state = ?, writer = ?, writer_pid = ? WHERE id = ?",
            (data, state, writer, pid, item.id),
        )
        if updated.rowcount or conversation_id is None:
            return False
        if parent is AT_PATH_END:
            row = self._db.execute(
                "SELECT leaf FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            parent = None if row is None else row[0]
        elif parent is not None:
            self._check_item(conversation_id, parent)
        self._db.execute(
            "INSERT INTO items"
            " (id, conversation_id, parent, seq, kind, state, writer, writer_pid, data)"
            " VALUES (?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items"
            " WHERE conversation_id = ?), ?, ?, ?, ?, ?)",
            (
                item.id,
                conversation_id,
                parent,
                conversation_id,
                item.kind,
                state,
                writer,
                pid,
                data,
            ),
        )
        return True


def _copy(item: Item) -> Item:
    """An equal item with a new id (for a fork: its tool-call ids are unchanged)."""
    copy = item_from_dict(item_to_dict(item))
    copy.id = new_id()
    return copy


def _pid_alive(pid: int | None) -> bool:
    """Whether process `pid` still runs: the liveness test where `fcntl` is missing."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # It exists but belongs to someone else.
    return True
