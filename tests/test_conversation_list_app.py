"""The conversation list: a filter that searches as the user types, dates, models, keys.

Dates on screen come from times set in the store and a fixed "now", in UTC
(the `utc` fixture), so they read the same on every machine and every day.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatui.app import ChatApp
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.screens.conversations import (
    NEW,
    SHOWN,
    ConversationList,
    ConversationRows,
    TextPrompt,
    when,
)
from chatui.store import Store
from tests.support.app import make_app, screen_text, wait_until
from tests.support.clocks import FakeClock
from tests.support.scripted import ScriptedProvider

SIZE = (90, 24)
NOW = datetime(2026, 3, 14, 15, 30, tzinfo=UTC).timestamp()


def at(*when: int) -> float:
    return datetime(*when, tzinfo=UTC).timestamp()


def converse(store: Store, title: str, updated: float, model: str = "", prompt: str = "") -> str:
    """A stored conversation with a prompt and, with `model`, a reply; last updated at `updated`."""
    conversation = store.create_conversation(title)
    store.save_item(conversation.id, UserPrompt(prompt or title))
    if model:
        provider = "anthropic" if model.startswith("claude") else "openai"
        store.save_item(
            conversation.id, ModelResponse(provider, model, state=ResponseState.COMPLETE)
        )
    store._db.execute(
        "UPDATE conversations SET updated = ? WHERE id = ?", (updated, conversation.id)
    )
    return conversation.id


def kitchen(store: Store) -> dict[str, str]:
    """Conversations of several days and years, with their models; the newest first."""
    return {
        "soda": converse(
            store,
            "Soda bread",
            at(2026, 3, 14, 14, 2),
            "gpt-4o-mini",
            "Soda bread with buttermilk?",
        ),
        "rust": converse(
            store, "Rust lifetimes", at(2026, 3, 3, 9), "claude-sonnet-4-5", "Explain borrowing"
        ),
        "markup": converse(
            store, "A [bold]markup[/] title\x1b[2J", at(2025, 12, 3, 18), "llama3.2"
        ),
        "rye": converse(
            store, "Rye starter", at(2024, 2, 28, 7), "", "How wet should rye dough get?"
        ),
    }


def shown(app: ChatApp) -> list[str]:
    return [row.id for row in app.screen.query_one(ConversationRows).rows]


def highlighted(app: ChatApp) -> str | None:
    row = app.screen.query_one(ConversationRows).highlighted_row()
    return None if row is None else row.id


async def open_list(pilot, app: ChatApp) -> ConversationList:
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ConversationList))
    await pilot.pause()
    return app.screen


async def push_list(pilot, app: ChatApp) -> ConversationList:
    """The list as Ctrl+O opens it, but with `NOW` for the wall clock's time.

    The conversation the app opened at its start is dated a little before `NOW`.
    """
    app.chat.session.store._db.execute(
        "UPDATE conversations SET updated = ? WHERE id = ?",
        (at(2026, 3, 14, 15, 0), app.chat.conversation.id),
    )
    screen = ConversationList(
        app.chat.session.store,
        app.chat.conversation.id,
        app.chat.delete_conversation,
        now=lambda: NOW,
    )
    await app.push_screen(screen)
    await wait_until(pilot, lambda: app.screen is screen and bool(shown(app)))
    await pilot.pause()
    return screen


@pytest.mark.parametrize(
    ("updated", "text"),
    [
        (at(2026, 3, 14, 0, 5), "00:05"),  # Today.
        (at(2026, 3, 13, 23, 59), "13 Mar"),  # Yesterday: this year.
        (at(2026, 1, 1, 0, 0), "1 Jan"),
        (at(2025, 12, 31, 23, 59), "31 Dec 2025"),  # Another year.
        (at(2027, 2, 1, 10, 0), "1 Feb 2027"),  # A clock that was ahead.
    ],
)
def test_a_date_reads_as_the_time_today_the_day_this_year_else_the_year_too(
    utc: None, updated: float, text: str
) -> None:
    assert when(updated, NOW) == text


async def test_each_row_shows_the_title_the_date_and_the_last_model(
    store: Store, utc: None
) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await push_list(pilot, app)
        assert shown(app) == [app.chat.conversation.id, *ids.values()]
        lines = screen_text(app).splitlines()

    def line_of(title: str) -> str:
        [line] = [line for line in lines if title in line]
        return " ".join(line.split())

    assert "Soda bread 14:02 gpt-4o-mini" in line_of("Soda bread")
    assert "Rust lifetimes 3 Mar claude-sonnet-4-5" in line_of("Rust lifetimes")
    assert "A [bold]markup[/] title␛[2J 3 Dec 2025 llama3.2" in line_of("markup")
    assert "Rye starter 28 Feb 2024" in line_of("Rye starter")


async def test_the_model_column_is_as_wide_as_its_longest_name_up_to_a_third(
    store: Store, utc: None
) -> None:
    converse(store, "Short", at(2026, 3, 14, 9), "gpt-4o")
    long_name = "claude-sonnet-4-5-20250929"  # 26 cells: whole at 90 columns (a third is 30).
    converse(store, "Long", at(2026, 3, 14, 10), long_name)
    huge = "m" * 60  # Past a third: cut, and the titles keep their room.
    converse(store, "Huge", at(2026, 3, 14, 8), huge)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await push_list(pilot, app)
        lines = screen_text(app).splitlines()

    [long_line] = [line for line in lines if "Long" in line]
    [huge_line] = [line for line in lines if "Huge" in line]
    assert long_name in long_line
    assert huge not in huge_line and "m" * 20 in huge_line and "…" in huge_line
    # One column for every row: the dates line up.
    assert long_line.index("10:00") == huge_line.index("08:00")


async def test_the_list_filters_titles_and_messages_as_the_user_types(
    store: Store, utc: None
) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await open_list(pilot, app)
        everything = shown(app)

        steps = {
            "b": {ids["soda"], ids["markup"], ids["rust"]},  # "bread", "bold", "borrowing".
            "br": {ids["soda"]},  # Only "bread" begins with "br" ("borrowing" does not).
            "bre": {ids["soda"]},
        }
        for key, expected in steps.items():
            await pilot.press(key[-1])
            await wait_until(pilot, lambda expected=expected: set(shown(app)) == expected)
        for _ in range(3):
            await pilot.press("backspace")
        await wait_until(pilot, lambda: shown(app) == everything)

        for key in "wet":  # A word of a prompt only.
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == [ids["rye"]])
        assert "1 conversation matches." in screen_text(app)
        for key in " zz":
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == [])
        assert "No conversation holds “wet zz”." in screen_text(app)


async def test_up_and_down_move_the_highlight_from_the_filter_and_enter_opens_it(
    store: Store, utc: None
) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_list(pilot, app)
        assert screen.focused is screen.query_one("#conversation-filter")
        first = highlighted(app)

        await pilot.press("down", "down", "up")
        assert highlighted(app) == shown(app)[shown(app).index(first) + 1]
        assert screen.focused is screen.query_one("#conversation-filter")  # Still typing there.

        for key in "rust":
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == [ids["rust"]])
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat.conversation.id == ids["rust"])
        assert not isinstance(app.screen, ConversationList)


async def test_letters_are_a_search_and_ctrl_keys_make_rename_and_delete(
    store: Store, utc: None
) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_list(pilot, app)
        for key in "rye":  # Once "n", "r" and "d" did something: now they are typed.
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == [ids["rye"]])
        assert screen.filter_text == "rye" and app.screen is screen

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        app.screen.query_one("#prompt-input").value = "Rye levain"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen)
        assert dict(store.list_conversations())[ids["rye"]] == "Rye levain"
        assert shown(app) == [ids["rye"]]  # Still found: by its new title and its prompt.

        await pilot.press("ctrl+d")  # Not the filter's delete-a-character.
        await wait_until(pilot, lambda: isinstance(app.screen, TextPrompt))
        assert "Delete “Rye levain”? Enter deletes" in screen_text(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen and shown(app) == [])
        assert not store.exists(ids["rye"])

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen is not screen)
        assert app.chat.conversation.id not in ids.values()


async def test_the_footer_names_the_lists_keys(store: Store, utc: None) -> None:
    kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await open_list(pilot, app)
        footer = screen_text(app).rstrip().splitlines()[-1]
    for key in ("esc Close", "⏎ Open", "^n New", "^r Rename", "^d Delete"):
        assert key in footer, footer


async def test_escape_closes_the_list_and_a_click_opens_a_row(store: Store, utc: None) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_list(pilot, app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is not screen)

        result: list[str | None] = []
        screen = ConversationList(store, app.chat.conversation.id, app.chat.delete_conversation)
        await app.push_screen(screen, result.append)
        await wait_until(pilot, lambda: bool(shown(app)))
        rows = screen.query_one(ConversationRows)
        await pilot.click(rows, offset=(2, shown(app).index(ids["rust"])))
        await wait_until(pilot, lambda: result == [ids["rust"]])
        assert NEW not in result


async def test_ten_thousand_conversations_show_the_latest_and_how_many_more(
    store: Store, utc: None
) -> None:
    rows = [(f"c{number}", f"Conversation {number}", number, number) for number in range(10_000)]
    store._db.executemany(
        "INSERT INTO conversations (id, title, created, updated) VALUES (?, ?, ?, ?)", rows
    )
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        await open_list(pilot, app)
        assert len(shown(app)) == SHOWN
        assert shown(app)[:2] == ["c9999", "c9998"]
        assert f"The latest {SHOWN} of 10,000 conversations. Type to search them all." in (
            screen_text(app)
        )

        for key in "conv":  # Every title holds "Conversation".
            await pilot.press(key)
        await wait_until(pilot, lambda: "more match" in screen_text(app))
        assert shown(app)[:2] == ["c9999", "c9998"] and len(shown(app)) == SHOWN
        assert f"{SHOWN} shown, and more match. Type more words to narrow them." in (
            screen_text(app)
        )

        await pilot.press("ctrl+u")  # The filter's delete-to-the-start.
        for key in "1234":
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == ["c1234"])
        await pilot.press("backspace")
        await wait_until(pilot, lambda: len(shown(app)) == 11)
        assert set(shown(app)) == {"c123", *(f"c123{digit}" for digit in range(10))}


async def test_the_list_looks_once_at_each_chatui_that_owns_conversations(
    store: Store, utc: None
) -> None:
    other = Store(store.path)  # Another chatui, running, that owns 50 conversations.
    held = [other.create_conversation(f"theirs {number}").id for number in range(50)]
    looks: list[str | None] = []
    alive = store._instance_alive

    def counted(instance_id: str | None, pid: int | None) -> bool:
        looks.append(instance_id)
        return alive(instance_id, pid)

    store._instance_alive = counted
    app = make_app(store, ScriptedProvider(), clock=FakeClock())
    try:
        async with app.run_test(size=SIZE) as pilot:
            looks.clear()
            await open_list(pilot, app)
            assert set(held) <= set(shown(app))
            assert "(open in another chatui)" in screen_text(app)
            assert looks == [other.instance_id]
    finally:
        other.close()


def test_snapshot_of_the_list_with_dates_and_models(snap_compare, store: Store, utc: None) -> None:
    kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        await push_list(pilot, app)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_of_the_list_filtered(snap_compare, store: Store, utc: None) -> None:
    ids = kitchen(store)
    app = make_app(store, ScriptedProvider(), clock=FakeClock())

    async def run_before(pilot) -> None:
        await push_list(pilot, app)
        for key in "butter":  # A word of a prompt.
            await pilot.press(key)
        await wait_until(pilot, lambda: shown(app) == [ids["soda"]])

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
