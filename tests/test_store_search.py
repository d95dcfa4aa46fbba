"""Full-text search of titles and messages: what it finds, kept in step with every write.

After each kind of write, `assert_in_step` checks that the index holds exactly
what an index rebuilt from the stored items and titles would hold, word by word
and position by position.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from chatui.messages import (
    ModelResponse,
    ResponseState,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResult,
    UserPrompt,
    item_to_dict,
)
from chatui.store import (
    LONG_MIGRATION_ITEMS,
    MIGRATIONS,
    SEARCH_ITEMS_QUERY,
    SEARCH_TITLES_QUERY,
    SearchHit,
    Store,
    match_expression,
    snippet,
)

FRESH = {
    "items_search": "body, content = 'items_searchable', content_rowid = 'item_rowid'",
    "titles_search": "title, content = 'conversations'",
}


def assert_in_step(store: Store) -> None:
    """The search indexes hold what indexes rebuilt from the items and titles would."""
    db = store._db
    for table, columns in FRESH.items():
        db.execute("BEGIN")
        try:
            db.execute(
                f"CREATE VIRTUAL TABLE fresh USING fts5 ({columns},"
                " tokenize = 'unicode61 remove_diacritics 2')"
            )
            db.execute("INSERT INTO fresh (fresh) VALUES ('rebuild')")
            words = {}
            for name in (table, "fresh"):
                db.execute(
                    f"CREATE VIRTUAL TABLE temp.words USING fts5vocab(main, {name}, instance)"
                )
                words[name] = sorted(db.execute("SELECT term, doc, offset FROM temp.words"))
                db.execute("DROP TABLE temp.words")
        finally:
            db.execute("ROLLBACK")
        assert words[table] == words["fresh"], table


def found(store: Store, query: str) -> set[str]:
    return {hit.conversation_id for hit in store.search(query)}


def reply(text: str, state: ResponseState = ResponseState.COMPLETE) -> ModelResponse:
    return ModelResponse("openai", "gpt-4o", parts=[TextPart(text)], state=state)


def dated(store: Store, conversation_id: str, when: float) -> None:
    store._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (when, conversation_id))


def test_search_finds_titles_prompts_replies_tool_calls_and_results_but_not_thinking(
    store: Store,
) -> None:
    conversation = store.create_conversation("Sourdough starter")
    store.save_item(conversation.id, UserPrompt("How long does proofing take?"))
    answer = ModelResponse(
        "openai",
        "gpt-4o",
        parts=[
            ThinkingPart("ruminating about yeast"),
            TextPart("Overnight, in the fridge."),
            ToolCallPart("c1", "thermometer", '{"room": "pantry"}', complete=True),
        ],
        state=ResponseState.COMPLETE,
    )
    store.save_item(conversation.id, answer)
    store.save_item(conversation.id, ToolResult("c1", "thermometer", "nineteen degrees"))
    other = store.create_conversation("Other")
    store.save_item(other.id, UserPrompt("nothing in common"))

    for word in ("sourdough", "proofing", "overnight", "thermometer", "pantry", "nineteen"):
        assert found(store, word) == {conversation.id}, word
    assert found(store, "ruminating") == set()
    assert_in_step(store)


def test_a_hit_has_the_title_the_time_and_one_line_around_the_latest_match(
    store: Store,
) -> None:
    conversation = store.create_conversation("Bread")
    store.save_item(conversation.id, UserPrompt("an older mention of rye"))
    words = "one two three four five six seven eight nine ten eleven twelve"
    store.save_item(conversation.id, reply(words + "\nrye\nthirteen fourteen."))
    dated(store, conversation.id, 1000.0)
    titled = store.create_conversation("Rye bread")
    dated(store, titled.id, 500.0)

    hits = store.search("rye")

    assert hits == [
        SearchHit(
            conversation.id,
            "Bread",
            1000.0,
            "… nine ten eleven twelve rye thirteen fourteen.",
        ),
        SearchHit(titled.id, "Rye bread", 500.0, ""),  # Its title alone matches.
    ]


def test_the_latest_conversations_come_first_and_limit_counts_conversations(
    store: Store,
) -> None:
    ids = []
    for number in range(5):
        conversation = store.create_conversation(f"c{number}")
        for _ in range(3):  # Several matches in one conversation are one hit.
            store.save_item(conversation.id, UserPrompt("kettle"))
        dated(store, conversation.id, float(number))
        ids.append(conversation.id)
    dated(store, ids[0], 99.0)  # The oldest messages, but the latest activity.

    assert [hit.conversation_id for hit in store.search("kettle")] == [
        ids[0],
        ids[4],
        ids[3],
        ids[2],
        ids[1],
    ]
    assert [hit.conversation_id for hit in store.search("kettle", limit=2)] == [ids[4], ids[3]]
    assert store.search("kettle", limit=0) == []


def test_summaries_matching_lists_only_the_conversations_that_match(store: Store) -> None:
    bread = store.create_conversation("Soda bread")
    store.save_item(bread.id, UserPrompt("buttermilk?"))
    store.save_item(bread.id, ModelResponse("anthropic", "claude", state=ResponseState.COMPLETE))
    rust = store.create_conversation("Rust lifetimes")
    store.save_item(rust.id, UserPrompt("borrow checker"))

    assert [row.id for row in store.summaries(matching="butter")] == [bread.id]
    [row] = store.summaries(matching="bread")
    assert (row.title, row.last_model) == ("Soda bread", "claude")
    assert [row.id for row in store.summaries(matching="  ")] == [rust.id, bread.id]
    assert store.summaries(matching="nowhere") == []
    assert store.summaries(limit=0, matching="bread") == []


def test_the_last_word_is_a_prefix_while_it_is_typed(store: Store) -> None:
    conversation = store.create_conversation()
    store.save_item(conversation.id, UserPrompt("bread and butter"))

    typed = ["b", "br", "bre", "bread", "bread b", "bread but"]
    assert [found(store, text) for text in typed] == [{conversation.id}] * len(typed)
    assert found(store, "bre ") == set()  # A space ends the word.
    assert found(store, "bre butter") == set()  # Only the last word is a prefix.
    assert found(store, "butter bread") == {conversation.id}  # In any order.
    assert found(store, "bread jam") == set()  # Every word.


@pytest.mark.parametrize(
    ("query", "finds"),
    [
        ('"', False),  # Punctuation alone is no word: nothing holds it.
        ('""', False),
        ('"gate', True),
        ("*", False),
        ("AND", True),
        ("OR", True),
        ("NOT", True),
        ("NEAR(", True),
        ("NEAR(the volts, 5)", True),
        ("-", False),
        ("-5", True),
        (":", False),
        ("gate:", True),
        ("body:quoted", True),  # Not a column filter: two words, one after the other.
        ("body:gate", False),
        ("^gate", True),
        ("(", False),
        ("{body}: gate", True),
        ("+", False),
        ("'", False),
        ("gate\x00volts", True),
        ("gate\x1b[2J", False),  # "2J" is a word of it, and the message has none.
        ("\\", False),
    ],
)
def test_what_a_user_types_is_only_ever_words_to_find(
    store: Store, query: str, finds: bool
) -> None:
    conversation = store.create_conversation("Logic")
    store.save_item(
        conversation.id, UserPrompt('NEAR the AND gate: -5 volts, OR NOT (body) "quoted"')
    )

    hits = store.search(query)  # Never an FTS5 syntax error.

    assert [hit.conversation_id for hit in hits] == ([conversation.id] if finds else [])
    assert [row.id for row in store.summaries(matching=query)] == [h.conversation_id for h in hits]


def test_random_hostile_text_never_breaks_a_search(store: Store) -> None:
    conversation = store.create_conversation()
    store.save_item(conversation.id, UserPrompt("anything"))
    alphabet = "\"*():^-+{}[]'\\ \t\nANDORNEARNOTa1é東\x00\x1b\u202e"
    generator = random.Random(27)
    for _ in range(500):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 12)))
        store.search(text)
        store.summaries(matching=text)


def test_case_and_accents_do_not_count(store: Store) -> None:
    conversation = store.create_conversation("Crème brûlée")
    store.save_item(conversation.id, UserPrompt("a CAFÉ in Zürich"))

    for query in ("creme", "BRULEE", "café", "cafe", "Zurich", "zür", "crè"):
        assert found(store, query) == {conversation.id}, query


def test_text_without_spaces_is_found_by_the_beginning_of_each_run(store: Store) -> None:
    """Chinese and Japanese are written without spaces: a run of letters is one word."""
    conversation = store.create_conversation()
    store.save_item(conversation.id, UserPrompt("東京都に住んでいます。大阪"))

    assert found(store, "東京") == {conversation.id}  # The beginning of a run, as a prefix.
    assert found(store, "大阪") == {conversation.id}  # A run after punctuation.
    assert found(store, "住ん") == set()  # Not in the middle of a run.
    assert found(store, "東京 ") == set()  # Nor a whole word that is only its beginning.


def test_a_rename_is_found_by_its_new_title_only(store: Store) -> None:
    conversation = store.create_conversation("Old name")
    store.rename_conversation(conversation.id, "Fresh title")

    assert found(store, "old") == set()
    assert found(store, "fresh") == {conversation.id}
    assert_in_step(store)


def test_a_rewritten_reply_is_found_by_its_new_text_only(store: Store) -> None:
    conversation = store.create_conversation()
    answer = reply("first draft")
    store.save_item(conversation.id, answer)
    answer.parts = [TextPart("second version")]
    store.save_item(conversation.id, answer)  # Rewritten in place.

    assert found(store, "draft") == set()
    assert found(store, "second") == {conversation.id}
    assert_in_step(store)


def test_a_reply_is_searchable_once_it_stops_streaming(store: Store) -> None:
    conversation = store.create_conversation()
    answer = reply("partial words", ResponseState.STREAMING)
    store.save_item(conversation.id, answer)
    assert found(store, "partial") == set()  # Each flush costs the index nothing.
    assert_in_step(store)

    answer.append_text(" and the rest")
    answer.state = ResponseState.INTERRUPTED
    store.save_item(conversation.id, answer)
    assert found(store, "partial rest") == {conversation.id}
    assert_in_step(store)

    answer.state = ResponseState.STREAMING  # Continued: streaming again, then complete.
    store.save_item(conversation.id, answer)
    assert found(store, "partial") == set()
    answer.append_text(" continued")
    answer.state = ResponseState.COMPLETE
    store.save_item(conversation.id, answer)
    assert found(store, "partial continued") == {conversation.id}
    assert_in_step(store)


def test_deleted_items_and_conversations_are_no_longer_found(store: Store) -> None:
    kept = store.create_conversation("kept")
    refused = UserPrompt("refused prompt")
    store.save_item(kept.id, refused)
    store.save_item(kept.id, reply("kept reply"))
    doomed = store.create_conversation("doomed")
    store.save_item(doomed.id, UserPrompt("doomed prompt"))
    store.save_item(doomed.id, ToolResult("c", "tool", "doomed result"))

    store.delete_item(refused.id)
    store.delete_conversation(doomed.id)

    assert found(store, "refused") == set()
    assert found(store, "doomed") == set()
    assert found(store, "kept") == {kept.id}
    assert_in_step(store)


def test_a_fork_is_found_by_the_messages_it_copied(store: Store) -> None:
    original = store.create_conversation("Original")
    store.save_item(original.id, UserPrompt("shared question"))
    store.save_item(original.id, reply("shared answer"))
    later = UserPrompt("later question")
    store.save_item(original.id, later)

    fork = store.fork_conversation(original.id, later.id)

    assert found(store, "shared answer") == {original.id, fork.id}
    assert found(store, "later") == {original.id}
    assert found(store, "branch") == {fork.id}  # "Original (branch)".
    assert_in_step(store)


def test_a_reply_recovered_from_a_dead_writer_becomes_searchable(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    writer = Store(path)
    conversation = writer.create_conversation()
    writer.save_item(conversation.id, reply("half written", ResponseState.STREAMING))
    writer._db.execute("UPDATE items SET writer_pid = 2147483646")  # A pid that is not running.
    writer.close()

    reopened = Store(path)  # Marks it interrupted.

    assert found(reopened, "half") == {conversation.id}
    assert_in_step(reopened)
    reopened.close()


def test_opening_a_store_from_before_search_indexes_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    answer = reply("stored long ago")
    streaming = reply("left mid sentence", ResponseState.STREAMING)
    with sqlite3.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:6]):
            db.executescript(f"{script}; PRAGMA user_version = {number + 1};")
        db.execute(
            "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 'Vintage', 0, 0)"
        )
        for seq, item in enumerate((UserPrompt("an old question"), answer, streaming)):
            state = item.state.value if isinstance(item, ModelResponse) else None
            db.execute(
                "INSERT INTO items (id, conversation_id, seq, kind, state, data)"
                " VALUES (?, 'c', ?, ?, ?, ?)",
                (item.id, seq, item.kind, state, json.dumps(item_to_dict(item))),
            )
    db.close()

    store = Store(path)

    assert found(store, "vintage") == found(store, "old question") == {"c"}
    assert found(store, "long ago") == {"c"}
    assert found(store, "sentence") == {"c"}  # Its writer is gone: recovered, then indexed.
    assert_in_step(store)
    store.close()


def test_a_search_reads_the_index_newest_first_and_each_item_by_its_rowid(store: Store) -> None:
    match = match_expression("bread")
    plan = [
        row[-1] for row in store._db.execute("EXPLAIN QUERY PLAN " + SEARCH_ITEMS_QUERY, (match,))
    ]
    assert plan[0].startswith("SCAN items_search VIRTUAL TABLE INDEX"), plan
    assert ":M" in plan[0]  # By the MATCH, in rowid order: no sort.
    assert plan[1] == "SEARCH items USING INTEGER PRIMARY KEY (rowid=?)", plan
    assert not any("TEMP B-TREE" in step for step in plan), plan

    titles = [
        row[-1]
        for row in store._db.execute("EXPLAIN QUERY PLAN " + SEARCH_TITLES_QUERY, (match, 50))
    ]
    assert any("titles_search VIRTUAL TABLE INDEX" in step and ":M" in step for step in titles)
    assert not any(step.startswith("SCAN conversations") and "INDEX" not in step for step in titles)


def test_match_expression_quotes_every_word() -> None:
    assert match_expression("") is None
    assert match_expression(" \t\n") is None
    assert match_expression('say "hi" AND*') == '"say" """hi""" "AND*" *'
    assert match_expression("bread ") == '"bread"'
    assert match_expression("a\x00b") == '"a" "b" *'


def test_a_snippet_is_one_line_around_the_first_word_found() -> None:
    text = "Alpha beta\ngamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron."
    assert snippet(text, "kap") == "… zeta eta theta iota kappa lambda mu nu xi omicron."
    assert (
        snippet(text, "ALPHA ")
        == "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu …"
    )
    assert snippet("Le Café", "cafe") == "Le Café"
    assert snippet("nothing found here", "zebra") == "nothing found here"


def test_owned_by_others_names_the_conversations_a_running_chatui_has_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    ours, theirs = Store(path), Store(path)
    mine = ours.create_conversation()
    held = [theirs.create_conversation() for _ in range(3)]
    released = theirs.create_conversation()
    theirs.release_conversation(released.id)

    ids = [mine.id, released.id, *(c.id for c in held)]
    assert ours.owned_by_others(ids) == {c.id for c in held}
    assert ours.owned_by_others([]) == set()
    theirs.close()
    assert ours.owned_by_others(ids) == set()
    assert ours.conversation_count() == 5
    ours.close()


def test_updating_a_big_store_says_so_before_it_begins_and_a_small_one_says_nothing(
    tmp_path: Path,
) -> None:
    """Building the search index of a store of a million items took 48 s, once, before
    any frame: without a word, chatui would look hung."""
    said: list[tuple[str, int]] = []
    for name, items in (("small", 10), ("big", LONG_MIGRATION_ITEMS)):
        path = tmp_path / f"{name}.sqlite3"
        with sqlite3.connect(path) as db:
            for number, script in enumerate(MIGRATIONS[:6]):
                db.executescript(f"{script}; PRAGMA user_version = {number + 1};")
            db.execute(
                "INSERT INTO conversations (id, title, created, updated) VALUES ('c', 't', 0, 0)"
            )
            db.executemany(
                "INSERT INTO items (id, conversation_id, seq, kind, data) VALUES (?, 'c', ?, ?, ?)",
                (
                    (prompt.id, n, prompt.kind, json.dumps(item_to_dict(prompt)))
                    for n in range(items)
                    for prompt in [UserPrompt(f"words {n}")]
                ),
            )
        db.close()

        store = Store(path, on_long_work=lambda text, at=path: said.append((text, store_rows(at))))
        assert store.search("words")  # Updated: the index holds what was there.
        store.close()

    assert [(text.split(" (")[0], rows) for text, rows in said] == [
        ("updating the conversation store for this version of chatui, once", LONG_MIGRATION_ITEMS)
    ]


def store_rows(path: Path) -> int:
    """The items another connection sees: the update has not begun (nor committed) yet."""
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        assert version == 6
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
