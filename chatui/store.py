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
the path shown. A conversation loads its tree's shape (ids, parents, kinds) in
one query and is built in Python (`Conversation.from_tree`); of its items only
the prompts and the end of the path are read at once, the others when first
used (`load_conversation`). Messages typed while a reply streams wait
in `queued` until they are sent, which turns each into a prompt of the same id.

Search: SQLite FTS5 indexes the titles and what the messages say (schema 7),
kept in step by triggers, whatever writes; `search` and `summaries(matching=)`
read it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final, Literal

try:
    import fcntl
except ImportError:  # Windows: liveness falls back to PIDs.
    fcntl = None  # type: ignore[assignment]  # A module or None: checked before each use.

import platformdirs

from chatui.lazy_items import LazyItems, parse
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
    # provider and model of its latest reply (that is JSON: `json_extract` fails on a
    # damaged row), for the list; the list reads its latest conversations through an
    # index, at any number of them.
    """
    ALTER TABLE conversations ADD COLUMN system_prompt TEXT;
    ALTER TABLE conversations ADD COLUMN provider TEXT;
    ALTER TABLE conversations ADD COLUMN model TEXT;
    ALTER TABLE conversations ADD COLUMN last_provider TEXT;
    ALTER TABLE conversations ADD COLUMN last_model TEXT;
    UPDATE conversations SET (last_provider, last_model) = (
        SELECT json_extract(data, '$.provider'), json_extract(data, '$.model') FROM items
        WHERE items.conversation_id = conversations.id AND kind = 'response'
            AND json_valid(data)
        ORDER BY seq DESC, rowid DESC LIMIT 1
    );
    CREATE INDEX conversations_by_updated ON conversations (updated);
    """,
    # Full-text search (see `Store.search`). The indexes keep no copy of the text: they
    # read it from the items, through the view `items_searchable`, and from the titles,
    # and triggers keep them in step with every write (the cascade that deletes a
    # conversation's items included). What a message holds to search: a prompt's text;
    # a reply's text and each tool call's name and arguments (not its thinking: long,
    # hidden behind a fold, and a hit there points at words the user did not read); a
    # tool result's tool and text. A reply is searchable once it stops streaming: the
    # view leaves it out until then, so the rewrite at each flush costs the index
    # nothing (at 10 kB, words and prefixes forgotten and indexed again took 1 ms of
    # the event loop each second, at 100 kB 15 ms). FTS5 reads the view with
    # statements that cannot use `json_each`, hence the walk over a reply's parts by
    # index. Prefixes of 1 to 3 letters are indexed: without them, a short prefix
    # merges the lists of every word it begins, at once (0.6 s at a million items).
    # A row that is not JSON (damaged) is left out: `json_extract` would fail on it, and
    # with it this update (a store no longer opened), or any write or delete of it.
    """
    CREATE VIEW items_searchable (item_rowid, body) AS SELECT rowid, CASE kind
        WHEN 'prompt' THEN json_extract(data, '$.text')
        WHEN 'tool_result' THEN
            json_extract(data, '$.name') || char(10) || json_extract(data, '$.content')
        WHEN 'response' THEN (
            WITH RECURSIVE part (n, value) AS (
                SELECT 0, json_extract(items.data, '$.parts[0]')
                UNION ALL SELECT n + 1, json_extract(items.data, '$.parts[' || (n + 1) || ']')
                FROM part WHERE value IS NOT NULL
            )
            SELECT group_concat(CASE json_extract(value, '$.kind')
                WHEN 'text' THEN json_extract(value, '$.text')
                WHEN 'tool_call' THEN
                    json_extract(value, '$.name') || char(10) || json_extract(value, '$.arguments')
            END, char(10)) FROM part
        )
    END FROM items WHERE state IS NOT 'streaming' AND json_valid(data);
    CREATE VIRTUAL TABLE items_search USING fts5 (
        body, content = 'items_searchable', content_rowid = 'item_rowid',
        tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
    );
    INSERT INTO items_search (items_search) VALUES ('rebuild');
    CREATE TRIGGER items_search_insert AFTER INSERT ON items BEGIN
        INSERT INTO items_search (rowid, body)
            SELECT item_rowid, body FROM items_searchable WHERE item_rowid = new.rowid;
    END;
    CREATE TRIGGER items_search_forget BEFORE UPDATE OF data, state ON items BEGIN
        INSERT INTO items_search (items_search, rowid, body)
            SELECT 'delete', item_rowid, body FROM items_searchable WHERE item_rowid = old.rowid;
    END;
    CREATE TRIGGER items_search_update AFTER UPDATE OF data, state ON items BEGIN
        INSERT INTO items_search (rowid, body)
            SELECT item_rowid, body FROM items_searchable WHERE item_rowid = new.rowid;
    END;
    CREATE TRIGGER items_search_delete BEFORE DELETE ON items BEGIN
        INSERT INTO items_search (items_search, rowid, body)
            SELECT 'delete', item_rowid, body FROM items_searchable WHERE item_rowid = old.rowid;
    END;
    CREATE VIRTUAL TABLE titles_search USING fts5 (
        title, content = 'conversations',
        tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
    );
    INSERT INTO titles_search (titles_search) VALUES ('rebuild');
    CREATE TRIGGER titles_search_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO titles_search (rowid, title) VALUES (new.rowid, new.title);
    END;
    CREATE TRIGGER titles_search_update AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO titles_search (titles_search, rowid, title)
            VALUES ('delete', old.rowid, old.title);
        INSERT INTO titles_search (rowid, title) VALUES (new.rowid, new.title);
    END;
    CREATE TRIGGER titles_search_delete AFTER DELETE ON conversations BEGIN
        INSERT INTO titles_search (titles_search, rowid, title)
            VALUES ('delete', old.rowid, old.title);
    END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# The state is written out, not a parameter: only then can SQLite use `items_streaming`.
RECOVERY_QUERY = (
    "SELECT data, writer, writer_pid FROM items"
    f" WHERE kind = 'response' AND state = '{ResponseState.STREAMING.value}'"
)
BRANCH_SUFFIX = " (branch)"
LONG_MIGRATION_ITEMS = 20_000  # From about this many items, an update of the schema is said.
# Items of a conversation read when it is opened: the last ones of its path, which the
# chat screen shows (its SHOWN_ITEMS); the others are read on first use.
READ_AT_OPEN = 40
# A search walks the matching messages newest first (the order of the index: no sort)
# and stops once it has found enough conversations; titles are few, all are read.
SEARCH_ITEMS_QUERY = (
    "SELECT items.conversation_id, items_search.rowid FROM items_search"
    " CROSS JOIN items ON items.rowid = items_search.rowid"
    " WHERE items_search MATCH ? ORDER BY items_search.rowid DESC"
)
SEARCH_TITLES_QUERY = (
    "SELECT id FROM conversations"
    " WHERE rowid IN (SELECT rowid FROM titles_search WHERE titles_search MATCH ?)"
    " ORDER BY updated DESC, rowid DESC LIMIT ?"
)
# Control characters separate words for the index too; in a query, a NUL would end it.
_CONTROLS = dict.fromkeys(range(0x20), " ")
_WORD = re.compile(r"\w+")
SNIPPET_WORDS = 12  # Words around the match that a hit's snippet shows, about.


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


@dataclass(frozen=True)
class SearchHit:
    """A conversation that holds what was searched for, in its title or its messages.

    `snippet` is plain text around the match in its latest matching message
    ("" when only its title matches). It and `title` are untrusted text.
    """

    conversation_id: str
    title: str
    updated: float
    snippet: str


def match_expression(text: str) -> str | None:
    """The FTS5 query for the words of `text` (all of them, in any order); None if it has none.

    Each word is quoted, so what a user types is only ever words to find,
    never query syntax: `"`, `*`, `AND`, `NEAR(`, `-` or `:` included. A word
    is split as the index splits text ("foo-bar" finds "foo bar"); one that
    is only punctuation finds nothing. The last word is a prefix ("bre" finds
    "bread") unless a space follows it: the list filters as the user types.
    """
    words = text.translate(_CONTROLS).split()
    if not words:
        return None
    typing = not text[-1].isspace()
    # Each word once: a pasted text repeats its words, and each costs a walk of the index.
    whole = dict.fromkeys(words[:-1] if typing else words)
    quoted = ['"' + word.replace('"', '""') + '"' for word in whole]
    if typing:
        quoted.append('"' + words[-1].replace('"', '""') + '" *')
    return " ".join(quoted)


def snippet(text: str, query: str) -> str:
    """About `SNIPPET_WORDS` words of `text` around the first that `query` finds, on one line.

    A word is found as the index finds it (case and accents aside, the last
    word of the query as a prefix); when none is (the index splits a few
    scripts otherwise), the snippet is the text's beginning. An ellipsis marks
    each end that was cut. It reads the text only as far as it shows.
    """
    exact = [_fold(word) for word in _WORD.findall(query.translate(_CONTROLS))]
    prefix = exact.pop() if exact and not query[-1].isspace() else None
    before: deque[re.Match[str]] = deque(maxlen=SNIPPET_WORDS // 3 + 1)
    words = _WORD.finditer(text)
    for word in words:
        before.append(word)
        folded = _fold(word[0])
        if folded in exact or (prefix is not None and folded.startswith(prefix)):
            break
    else:
        before.clear()
        words = _WORD.finditer(text)  # Found by none: from the beginning.
    shown = list(before)
    shown.extend(itertools.islice(words, SNIPPET_WORDS - len(shown)))
    if not shown:
        return " ".join(text[: SNIPPET_WORDS * 10].split())
    # Punctuation before the first word or after the last is kept, not cut.
    begin = shown[0].start() if _WORD.search(text, 0, shown[0].start()) else 0
    finish = shown[-1].end() if next(words, None) else len(text)
    line = " ".join(text[begin:finish].split())
    return ("… " if begin else "") + line + (" …" if finish < len(text) else "")


def _fold(word: str) -> str:
    """`word` as the index compares it: without case or accents."""
    if word.isascii():
        return word.lower()
    return "".join(
        char for char in unicodedata.normalize("NFKD", word) if not unicodedata.combining(char)
    ).casefold()


class StoreError(Exception):
    """The database cannot be opened or is from a newer chatui."""


class Store:
    """Conversations on disk. All methods run on the caller's thread and are quick."""

    def __init__(
        self, path: Path | str, *, on_long_work: Callable[[str], None] | None = None
    ) -> None:
        """Open (or create) the store at `path`, bringing its schema up to this chatui's.

        `on_long_work` is told, before it begins, of work that may take a while
        (an update of a big store's schema: its search index is built once).
        """
        self._on_long_work = on_long_work
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
        if version and version < SCHEMA_VERSION and self._on_long_work is not None:
            (items,) = self._db.execute("SELECT COALESCE(MAX(rowid), 0) FROM items").fetchone()
            if items >= LONG_MIGRATION_ITEMS:
                self._on_long_work(
                    f"updating the conversation store for this version of chatui, once "
                    f"(about {items:,} items: this can take a minute)…"
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
            try:
                response = parse(data)
            except ValueError:  # Damaged: left as it is, but never looked at again.
                self._db.execute(
                    "UPDATE items SET state = ? WHERE data = ? AND state = ?",
                    (ResponseState.INTERRUPTED.value, data, ResponseState.STREAMING.value),
                )
                continue
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
        thus back on screen. One whose items cannot be read (damaged) is left
        for the list to say so: chatui still starts.
        """
        recent = self.list_conversations()
        if recent and self.claim_conversation(recent[0][0]):
            try:
                latest = self.load_conversation(recent[0][0])  # Ours now: it is final.
            except ValueError:
                latest = None
            if latest is not None and (
                not latest.items or self.load_draft(latest.id) or self.load_queue(latest.id)
            ):
                return latest
            self.release_conversation(recent[0][0])
        return self.create_conversation()

    def list_conversations(self) -> list[tuple[str, str]]:
        """(id, title) pairs, most recently updated first."""
        return list(
            self._db.execute(
                "SELECT id, title FROM conversations ORDER BY updated DESC, rowid DESC"
            )
        )

    def summaries(self, limit: int | None = None, matching: str = "") -> list[ConversationSummary]:
        """The conversations as the list shows them, most recently updated first.

        With `matching`, only those whose title or one of whose messages holds
        all its words (see `match_expression` and `search`).
        """
        if (match := match_expression(matching)) is not None:
            return self._summaries_of(self._matching(match, limit), limit)
        rows = self._db.execute(
            "SELECT id, title, updated, last_provider, last_model FROM conversations"
            " ORDER BY updated DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [
            ConversationSummary(id, title, updated, provider or "", model or "")
            for id, title, updated, provider, model in rows
        ]

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """The conversations whose title or one of whose messages holds all the words of `query`.

        Most recently updated first, as in the list. What a message holds is
        its text (a prompt's, a reply's, a tool result's) and the name and
        arguments of the tools it calls, not a reply's thinking; case and
        accents do not count; the last word is a prefix (`match_expression`).
        When more than `limit` conversations match by their messages, the
        search stops early, so a common word costs little more than a rare one
        at any size of the store: it picks among the conversations with the
        newest matching messages (and all the titles that match). A
        conversation whose only match is old, but active since, can then be
        left out.
        """
        if (match := match_expression(query)) is None or limit <= 0:
            return []
        latest = self._matching(match, limit)
        return [
            SearchHit(row.id, row.title, row.updated, self._snippet(query, latest[row.id]))
            for row in self._summaries_of(latest, limit)
        ]

    def _matching(self, match: str, limit: int | None) -> dict[str, int | None]:
        """Conversations matching `match`: each one's newest matching message (None: its title).

        The `limit` (None: all) latest whose titles match, and the first
        `limit` found by their messages, newest message first: among them are
        the `limit` latest that match, unless more than `limit` match by their
        messages.
        """
        latest: dict[str, int | None] = {}
        if limit is not None and limit <= 0:
            return latest
        found = self._db.execute(SEARCH_ITEMS_QUERY, (match,))
        try:
            for conversation_id, rowid in found:
                if conversation_id not in latest:
                    latest[conversation_id] = rowid
                    if len(latest) == limit:
                        break
        finally:
            found.close()  # Its statement would hold a read snapshot until collected.
        titles = self._db.execute(SEARCH_TITLES_QUERY, (match, -1 if limit is None else limit))
        for (conversation_id,) in titles:
            latest.setdefault(conversation_id, None)
        return latest

    def _summaries_of(self, ids: Iterable[str], limit: int | None) -> list[ConversationSummary]:
        """The summaries of the conversations `ids`, most recently updated first."""
        rows = self._db.execute(
            "SELECT id, title, updated, last_provider, last_model FROM conversations"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY updated DESC, rowid DESC"
            " LIMIT ?",
            (json.dumps(list(ids)), -1 if limit is None else limit),
        )
        return [
            ConversationSummary(id, title, updated, provider or "", model or "")
            for id, title, updated, provider, model in rows
        ]

    def _snippet(self, query: str, rowid: int | None) -> str:
        """One line of the message `rowid` around its first word that `query` finds ("" for None).

        Found again here rather than by FTS5's `snippet()`, which would run the
        search once more for each hit: a short prefix costs milliseconds each.
        """
        if rowid is None:
            return ""
        row = self._db.execute(
            "SELECT body FROM items_searchable WHERE item_rowid = ?", (rowid,)
        ).fetchone()
        return "" if row is None or row[0] is None else snippet(row[0], query)

    def conversation_count(self) -> int:
        """How many conversations are stored."""
        return int(self._db.execute("SELECT count(*) FROM conversations").fetchone()[0])

    def owned_by_others(self, conversation_ids: Iterable[str]) -> set[str]:
        """Those of the conversations that another chatui instance, still running, owns.

        One query, and one look at each owner's lock file, however many
        conversations it owns (`owned_by_other` looks once per conversation).
        """
        rows = self._db.execute(
            "SELECT id, owner, owner_pid FROM conversations"
            " WHERE id IN (SELECT value FROM json_each(?)) AND owner IS NOT NULL AND owner != ?",
            (json.dumps(list(conversation_ids)), self.instance_id),
        )
        alive: dict[str, bool] = {}
        owned = set()
        for conversation_id, owner, pid in rows:
            if owner not in alive:
                alive[owner] = self._instance_alive(owner, pid)
            if alive[owner]:
                owned.add(conversation_id)
        return owned

    def conversations_starting_with(self, start: str) -> list[tuple[str, str]]:
        """(id, title) of each conversation whose id starts with `start`, most recent first."""
        return list(
            self._db.execute(
                "SELECT id, title FROM conversations WHERE substr(id, 1, length(?)) = ?"
                " ORDER BY updated DESC, rowid DESC",
                (start, start),
            )
        )

    def latest_conversation_id(self) -> str | None:
        """The most recently updated conversation that holds an item, or None when none does.

        An empty one (the app opens one at every start) is not "the last conversation".
        """
        row = self._db.execute(
            "SELECT id FROM conversations WHERE EXISTS"
            " (SELECT 1 FROM items WHERE items.conversation_id = conversations.id)"
            " ORDER BY updated DESC, rowid DESC LIMIT 1"
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

    def load_conversation(self, conversation_id: str, *, read: int = READ_AT_OPEN) -> Conversation:
        """The conversation with every version of its items, showing its stored path.

        Opening reads the tree's shape (each item's id, parent and kind), every
        prompt (the composer's Up walks them) and the last `read` items of the
        path: what the screen shows (all of them, if there are no more items than
        that). Every other item is a stand-in that is read, with all the others,
        the first time one of its fields is (`chatui.lazy_items`): nothing sees
        the difference but the time it takes.
        """
        row = self._db.execute(
            "SELECT title, view_start, leaf, branched_from, branched_title, system_prompt,"
            " provider, model FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        title, view_start, leaf, branched_from, branched_title, system_prompt = row[:6]
        provider, model = row[6:]
        lazy = LazyItems(lambda ids: self._item_rows(conversation_id, ids))
        stored = [
            (
                lazy.stand_in(kind, item_id) if data is None else parse(data),
                parent,
            )
            for item_id, parent, kind, data in self._db.execute(
                "SELECT id, parent, kind, CASE kind WHEN 'prompt' THEN data END FROM items"
                " WHERE conversation_id = ? ORDER BY seq, rowid",
                (conversation_id,),
            )
        ]
        origin = None if branched_from is None else BranchOrigin(branched_from, branched_title)
        conversation = Conversation.from_tree(
            conversation_id,
            title,
            stored,
            leaf,
            view_start=view_start,
            branched_from=origin,
            system_prompt=system_prompt,
            model=None if provider is None else ModelRef(provider, model or ""),
        )
        path = conversation.items
        shown = None if len(stored) <= read else path[max(0, len(path) - read) :]
        lazy.read(None if shown is None else [item.id for item in shown])  # None: all of them.
        return conversation

    def _item_rows(self, conversation_id: str, ids: list[str]) -> list[tuple[str, str]]:
        """The (id, data) of the conversation's items `ids` (those still stored)."""
        return self._db.execute(
            "SELECT id, data FROM items WHERE conversation_id = ?"
            " AND id IN (SELECT value FROM json_each(?))",
            (conversation_id, json.dumps(ids)),
        ).fetchall()

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
        Its view start follows when the item it names is copied, and it keeps the
        original's own system prompt and model. Raises KeyError
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
            system_prompt=original.system_prompt,
            model=original.model,
        )
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO conversations (id, title, created, updated, owner, owner_pid,"
                " view_start, branched_from, branched_title, system_prompt, provider, model)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    original.system_prompt,
                    None if original.model is None else original.model.provider,
                    None if original.model is None else original.model.model,
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
            # One write of the conversation's row: its time, its path's end (a new item),
            # and the model of its latest reply (for the list).
            sets: list[str] = ["updated = ?"]
            values: list[object] = [time.time()]
            if self._write_item(item, conversation_id, parent):
                sets.append("leaf = ?")
                values.append(item.id)
            if isinstance(item, ModelResponse):
                sets.append("last_provider = ?, last_model = ?")
                values += [item.provider, item.model]
            self._db.execute(
                f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?",
                (*values, conversation_id),
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
