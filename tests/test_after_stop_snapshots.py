"""Snapshots of Continue, versions, the edit banner and a fork (snapshots/<this module>/).

The app gets a fake clock, so the status bar's figures are the same on every run.
"""

from __future__ import annotations

from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.composer import Composer
from tests.support.app import (
    fix_stop_time,
    make_app,
    press_and_settle,
    send,
    settled,
    stop_midway,
    wait_until,
)
from tests.support.clocks import FakeClock
from tests.support.scripted import STALL, ScriptedProvider, words

SIZE = (80, 24)
ASK = "How do I bake bread without yeast?"


def reply(app) -> AssistantMessage:  # type: ignore[no-untyped-def]
    return app.chat.query(AssistantMessage).last()


def test_a_continued_reply(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(
        [*words("Soda bread is a quick bread made", end=None), STALL],
        words(" with baking soda instead of yeast.", usage=(30, 8)),
    )
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await send(pilot, ASK)
        await stop_midway(pilot, app, provider)
        await press_and_settle(pilot, app, "ctrl+g")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_a_reply_with_versions(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(
        words("Soda bread."), words("Flatbread."), words("Try a sourdough starter.")
    )
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await send(pilot, ASK)
        await wait_until(pilot, settled(app))
        await press_and_settle(pilot, app, "ctrl+r")
        await press_and_settle(pilot, app, "ctrl+r")
        await pilot.press("alt+left")  # The second of three.
        await wait_until(pilot, lambda: reply(app).response.text == "Flatbread.")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_edit_banner(snap_compare, store: Store) -> None:
    provider = ScriptedProvider([*words("Soda bread is", end=None), STALL])
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await send(pilot, ASK)
        await stop_midway(pilot, app, provider)
        await fix_stop_time(pilot)
        await pilot.press("ctrl+e")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_a_forked_conversation(snap_compare, store: Store) -> None:
    provider = ScriptedProvider(
        words("Soda bread."), words("About 40 minutes."), words("Naan, on a hot pan.")
    )
    app = make_app(store, provider, clock=FakeClock())

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await send(pilot, ASK)
        await wait_until(pilot, settled(app))
        await send(pilot, "How long does it bake?")
        await wait_until(pilot, lambda: len(provider.records) == 2 and settled(app)())
        await pilot.press("ctrl+e", "ctrl+e")  # The first prompt, to edit.
        app.chat.query_one(Composer).text = "What about flatbread?"
        await press_and_settle(pilot, app, "enter")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
