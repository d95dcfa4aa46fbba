"""Helpers for driving the app with Pilot, and for reading what it stored."""

from __future__ import annotations

import html
import re
import sqlite3
import time
from collections.abc import Callable

from textual.pilot import Pilot

from chatui.app import ChatApp
from chatui.config import Config
from chatui.screens.approval import ApprovalDialog
from chatui.store import Store
from tests.support.scripted import ScriptedProvider


def make_app(store: Store, provider, *, clock: Callable[[], float] | None = None, **kw) -> ChatApp:
    config = Config(system_prompt="", db_path=str(store.path))
    if clock is None:
        return ChatApp(config, store, provider, **kw)
    return ChatApp(config, store, provider, clock=clock, **kw)


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Let the app run until `condition()` holds (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await pilot.pause(0.005)


async def send(pilot: Pilot, text: str) -> None:
    composer = pilot.app.screen.query_one("#composer")
    composer.text = text
    await pilot.press("enter")


def settled(app: ChatApp) -> Callable[[], bool]:
    """True once the running turn's outcome is on screen."""
    return lambda: (
        app.chat.turn is not None
        and not app.chat.turn.running
        and (app.last_outcome is not None and app.last_outcome.turn_id == app.chat.turn.id)
    )


def idle(app: ChatApp) -> Callable[[], bool]:
    """True once no turn runs or wraps up: whatever the app does next has been decided."""
    return lambda: settled(app)() and not app.chat.busy


async def esc_until_idle(pilot: Pilot, app: ChatApp) -> None:
    """Esc; wait until no turn runs or wraps up."""
    await pilot.press("escape")
    await wait_until(pilot, idle(app))


async def stop_midway(pilot: Pilot, app: ChatApp, provider: ScriptedProvider) -> None:
    """Esc once the request in flight is stalled; wait for its outcome on screen."""
    await provider.last.stalled.wait()
    await pilot.press("escape")
    await wait_until(pilot, settled(app))


async def press_and_settle(pilot: Pilot, app: ChatApp, key: str) -> None:
    """A key that starts a turn; wait until that turn's outcome is on screen."""
    before = app.chat.turn
    await pilot.press(key)
    await wait_until(pilot, lambda: app.chat.turn is not before and settled(app)())


async def fix_stop_time(pilot: Pilot, ms: float = 20.0) -> None:
    """Show `ms` as the stop time, for a snapshot: the real figure is the machine's.

    It counts from the Esc's read to the stop on screen in real time
    (`test_stopped_in_counts_from_when_the_escs_byte_was_read` checks it).
    """
    from chatui.widgets.status_bar import StatusBar

    pilot.app.screen.query_one(StatusBar).stop_ms = ms
    await pilot.pause()


def approval_shown(app: ChatApp) -> Callable[[], bool]:
    """True once the approval dialog is on top and drawn: a key typed from then on answers it."""
    return lambda: isinstance(app.screen, ApprovalDialog) and app.screen.shown_at is not None


def screen_text(app) -> str:
    """The text on screen, from the app's own screenshot."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


FIXED_DATE = 1614600000.0  # 1 March 2021, 12:00 UTC.


def date_conversations(store: Store, first: float = FIXED_DATE, step: float = 86400.0) -> None:
    """Date the stored conversations `step` seconds apart from `first`, in the order they
    were made, so that the dates the conversation list shows never change (with `utc`)."""
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE conversations SET updated = ? + rowid * ?", (first, step))
    db.close()


def conversation_rows(store: Store, conversation_id: str) -> tuple[list[tuple], list[tuple]]:
    """The conversation's stored items, byte for byte, and its row (but who has it open)."""
    with sqlite3.connect(store.path) as db:
        items = db.execute(
            "SELECT * FROM items WHERE conversation_id = ? ORDER BY seq, rowid", (conversation_id,)
        ).fetchall()
        row = db.execute(
            "SELECT id, title, created, updated, view_start, leaf, branched_from, branched_title"
            " FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchall()
    return items, row
