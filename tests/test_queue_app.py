"""Type while it streams: Enter queues the message, a complete reply sends the queue in order.

After a stop or a failure the queue stays, unsent, until Ctrl+S (or a turn that
completes); a queued message is never lost, never sent twice, and survives a
switch of conversation and a restart.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from textual import events
from textual.pilot import Pilot

from chatui._textual.input import InputPump
from chatui.app import ChatApp
from chatui.messages import ResponseState, UserPrompt
from chatui.providers.base import StreamEnd
from chatui.store import Store
from chatui.widgets.composer import BUSY_NOTICE, Composer
from chatui.widgets.queue_panel import QueuePanel
from tests.support.app import esc_until_idle, fix_stop_time, idle, make_app, send, wait_until
from tests.support.clocks import FakeClock
from tests.support.scripted import RAISE, STALL, Gate, ScriptedProvider, words

SIZE = (80, 24)
KITTY_ESCAPE = "\x1b[27u"  # Esc as a terminal with the kitty protocol sends it: no wait.


def queued(store: Store, app: ChatApp) -> list[str]:
    return [message.text for message in store.load_queue(app.chat.conversation.id)]


def prompts(store: Store, conversation_id: str) -> list[str]:
    items = store.load_conversation(conversation_id).items
    return [item.text for item in items if isinstance(item, UserPrompt)]


def sent(provider: ScriptedProvider) -> list[str]:
    """The last message of each request the provider received: the prompt it answered."""
    return [record.request.messages[-1].content for record in provider.records]  # type: ignore[misc]


def panel(app: ChatApp) -> QueuePanel:
    return app.chat.query_one(QueuePanel)


def rows(app: ChatApp) -> list[str]:
    """The queued messages as the panel shows them, each with a ✕ at the end of its line."""
    return [line.removesuffix(" ✕").rstrip() for line in panel(app).lines if line.endswith(" ✕")]


def composer(app: ChatApp) -> Composer:
    return app.chat.query_one(Composer)


def held_reply(gate: Gate) -> list:
    """A reply that stops mid-stream at `gate`, then completes."""
    return [*words("the first reply", end=None), gate, StreamEnd("stop")]


async def queue(pilot, app: ChatApp, store: Store, text: str) -> None:  # type: ignore[no-untyped-def]
    """Type `text` and Enter while a reply streams; wait until it is stored in the queue."""
    before = len(queued(store, app))
    await send(pilot, text)
    await wait_until(pilot, lambda: len(queued(store, app)) == before + 1)


STALLING = (*words("streaming", end=None), STALL)  # A reply that stalls until it is stopped.


@asynccontextmanager
async def while_replying(
    store: Store,
    provider: ScriptedProvider,
    *,
    held_at: Gate | None = None,
    queueing: Sequence[str] = (),
) -> AsyncIterator[tuple[ChatApp, Pilot]]:
    """The app on `provider` once "one" is sent, its reply is held and `queueing` is queued.

    The reply is held at `held_at` once the provider reaches that gate, or else at its
    stall. The app runs until the block ends.
    """
    app = make_app(store, provider)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        if held_at is None:
            await provider.last.stalled.wait()
        else:
            await held_at.reached.wait()
        for text in queueing:
            await queue(pilot, app, store, text)
        yield app, pilot


# 1, 2. Enter queues while a turn runs; a complete reply sends the queue, in order


async def test_enter_while_a_reply_streams_queues_and_a_complete_reply_sends_them_in_order(
    store: Store,
) -> None:
    gate = Gate()
    provider = ScriptedProvider(held_reply(gate), words("reply two"), words("reply three"))
    async with while_replying(
        store, provider, held_at=gate, queueing=["two", "three\nwith a second line"]
    ) as (app, pilot):
        assert queued(store, app) == ["two", "three\nwith a second line"]
        assert composer(app).text == "" and not composer(app).locked
        assert panel(app).display
        assert rows(app) == ["◷ Queued: two", "◷ Queued: three…"]
        assert panel(app).lines[-1] == "Sent when the reply completes (Esc keeps them here)"
        assert sent(provider) == ["one"]  # Nothing more while the reply streams.

        gate.opened.set()
        await wait_until(pilot, lambda: len(provider.records) == 3 and idle(app)())

        assert sent(provider) == ["one", "two", "three\nwith a second line"]
        conversation_id = app.chat.conversation.id
        assert prompts(store, conversation_id) == ["one", "two", "three\nwith a second line"]
        assert queued(store, app) == [] and not panel(app).display
        assert app.last_outcome.state is ResponseState.COMPLETE


async def test_a_stop_keeps_the_queue_unsent_and_says_how_to_send_it(store: Store) -> None:
    provider = ScriptedProvider(STALLING, words("reply two"))
    async with while_replying(store, provider, queueing=["two"]) as (app, pilot):
        await esc_until_idle(pilot, app)

        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert sent(provider) == ["one"]
        assert queued(store, app) == ["two"]
        assert panel(app).lines[-1] == "Not sent: Ctrl+S sends it now · Ctrl+E edits it"
        assert app.chat.check_action("send_queued", ()) is True


async def test_a_failed_reply_keeps_the_queue_unsent(store: Store) -> None:
    gate = Gate()
    provider = ScriptedProvider([*words("partial", end=None), gate, RAISE], words("never"))
    async with while_replying(
        store,
        provider,
        held_at=gate,
        queueing=["two", "three"],
    ) as (app, pilot):
        gate.opened.set()
        await wait_until(pilot, idle(app))

        assert app.last_outcome.state is ResponseState.FAILED
        assert sent(provider) == ["one"]
        assert queued(store, app) == ["two", "three"]
        hint = "Not sent: Ctrl+S sends the first now · Ctrl+E edits the last"
        assert panel(app).lines[-1] == hint


async def test_keys_read_with_the_enter_that_queued_stay_in_the_composer(store: Store) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider) as (app, pilot):
        await pilot.click(Composer)

        for char in "two\rthree\r":  # One read: a paste without bracketed paste.
            app.post_message(events.Key("enter", None) if char == "\r" else events.Key(char, char))
        await wait_until(pilot, lambda: composer(app).text == "three")
        await pilot.pause()

        assert queued(store, app) == ["two"]  # Neither glued to it nor queued after it.
        assert BUSY_NOTICE in [notice.message for notice in app._notifications]
        await pilot.press("enter")  # An Enter of its own queues it, as the notice says.
        await wait_until(pilot, lambda: queued(store, app) == ["two", "three"])
        await esc_until_idle(pilot, app)


async def test_the_panel_shows_queued_text_literally_and_counts_what_does_not_fit(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(
        store, provider, queueing=["[b]bold?[/b] \x1b[2J", "two", "three", "four", "five"]
    ) as (app, pilot):
        assert rows(app) == ["◷ Queued: [b]bold?[/b] ␛[2J", "◷ Queued: two", "◷ Queued: three"]
        assert panel(app).lines[3] == "   and 2 more queued"
        await esc_until_idle(pilot, app)


# 3. Send the queued message now: Ctrl+S, and the command palette


async def test_ctrl_s_sends_the_first_queued_message_after_a_stop(store: Store) -> None:
    provider = ScriptedProvider(STALLING, words("reply two"), words("reply three"))
    async with while_replying(store, provider, queueing=["two", "three"]) as (app, pilot):
        await esc_until_idle(pilot, app)
        assert sent(provider) == ["one"]

        await pilot.press("ctrl+s")
        # "two" is sent; it completes, so "three" follows, as after any complete reply.
        await wait_until(pilot, lambda: len(provider.records) == 3 and idle(app)())

        assert sent(provider)[1].endswith("two")  # After the interrupted note.
        assert sent(provider)[2] == "three"
        assert prompts(store, app.chat.conversation.id) == ["one", "two", "three"]
        assert queued(store, app) == [] and not panel(app).display


async def test_ctrl_s_while_a_reply_streams_does_nothing_and_the_reply_sends_it_once(
    store: Store,
) -> None:
    gate = Gate()
    provider = ScriptedProvider(held_reply(gate), words("reply two"), words("never"))
    async with while_replying(store, provider, held_at=gate, queueing=["two"]) as (app, pilot):
        assert app.chat.check_action("send_queued", ()) is None  # Dimmed: a turn runs.
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert sent(provider) == ["one"] and queued(store, app) == ["two"]

        # Ctrl+S again the moment the reply has completed, as the turn wraps up.
        show = app.chat._show_outcome
        pressed: list[str] = []

        async def ctrl_s_during_wrap_up(turn, outcome) -> None:  # type: ignore[no-untyped-def]
            if not pressed:
                pressed.append("ctrl+s")
                app.post_message(events.Key("ctrl+s", None))
            await show(turn, outcome)

        app.chat._show_outcome = ctrl_s_during_wrap_up  # type: ignore[method-assign]
        gate.opened.set()
        await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())
        await pilot.press("ctrl+s")  # Nothing is queued any more: nothing happens.
        await wait_until(pilot, idle(app))

        assert pressed == ["ctrl+s"]
        assert sent(provider) == ["one", "two"]
        assert prompts(store, app.chat.conversation.id) == ["one", "two"]
        assert queued(store, app) == []


async def test_the_command_palette_sends_the_queued_message_when_no_turn_runs(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING, words("reply two"))
    async with while_replying(store, provider, queueing=["two"]) as (app, pilot):
        titles = [command.title for command in app.get_system_commands(app.chat)]
        assert "Send the queued message now" not in titles  # A turn runs.

        await esc_until_idle(pilot, app)
        commands = {command.title: command for command in app.get_system_commands(app.chat)}
        await commands["Send the queued message now"].callback()  # type: ignore[misc]
        await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())

        assert prompts(store, app.chat.conversation.id) == ["one", "two"]
        assert queued(store, app) == []


# 4. Taking a queued message back: never lost


async def test_take_last_queued_gives_back_the_last_and_the_store_forgets_it(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two", "three"]) as (app, pilot):
        assert app.chat.take_last_queued() == "three"
        assert queued(store, app) == ["two"]
        assert rows(app) == ["◷ Queued: two"]
        assert app.chat.take_last_queued() == "two"
        assert queued(store, app) == [] and not panel(app).display
        assert app.chat.take_last_queued() is None

        await esc_until_idle(pilot, app)
        assert sent(provider) == ["one"]


async def test_ctrl_e_takes_the_last_queued_message_back_to_edit_and_enter_queues_it_again(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two", "three"]) as (app, pilot):
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: composer(app).text == "three")
        assert queued(store, app) == ["two"]
        await wait_until(pilot, lambda: store.load_draft(app.chat.conversation.id) == "three")

        composer(app).text = "three, edited"
        await pilot.press("enter")  # A turn still runs: queued again, at the end.
        await wait_until(pilot, lambda: queued(store, app) == ["two", "three, edited"])
        await esc_until_idle(pilot, app)
        assert sent(provider) == ["one"]


async def test_a_click_on_the_cross_takes_the_message_back_into_the_composer_and_its_draft(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two", "three"]) as (app, pilot):
        composer(app).text = "typing"

        width = panel(app).content_region.width
        await pilot.click(QueuePanel, offset=(width + 1, 0))  # The ✕ of "two".

        assert queued(store, app) == ["three"]
        assert composer(app).text == "two\ntyping"
        assert store.load_draft(app.chat.conversation.id) == "two\ntyping"  # Stored at once.
        await esc_until_idle(pilot, app)


def full_disk(*args: object) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def notices(app: ChatApp) -> list[str]:
    return [notification.message for notification in app._notifications]


async def test_a_message_the_store_cannot_queue_stays_in_the_composer_and_is_told(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider) as (app, pilot):
        monkeypatch.setattr(store, "queue_message", full_disk)

        await send(pilot, "two")
        await wait_until(pilot, lambda: composer(app).text == "two" and not composer(app).locked)

        assert queued(store, app) == [] and not panel(app).display
        (told,) = [notice for notice in notices(app) if "queued" in notice]
        assert "database or disk is full" in told and "stays in the composer" in told
        await esc_until_idle(pilot, app)
        assert sent(provider) == ["one"]


async def test_a_queued_message_the_store_cannot_take_out_stays_queued_and_is_told(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two"]) as (app, pilot):
        composer(app).text = "typing"
        monkeypatch.setattr(store, "remove_queued", full_disk)

        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: any("taken out" in n for n in notices(app)))

        assert queued(store, app) == ["two"] and rows(app) == ["◷ Queued: two"]
        assert composer(app).text == "typing"
        await esc_until_idle(pilot, app)


# 5. Never lost, never twice: restarts, switches, quitting, keys read together


async def test_the_queue_survives_a_restart_and_waits_to_be_sent(store: Store) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two", "three"]) as (app, pilot):
        talked = app.chat.conversation.id
        await pilot.press("ctrl+q")  # Quitting stops the reply; the queue stays.
        await wait_until(pilot, lambda: not app.is_running)
    assert [message.text for message in store.load_queue(talked)] == ["two", "three"]
    assert prompts(store, talked) == ["one"]

    again_provider = ScriptedProvider(words("reply two"), words("reply three"))
    again = make_app(store, again_provider)  # A second chatui on the same store.
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.chat.conversation.id == talked  # Reopened: it has a queue.
        assert rows(again) == ["◷ Queued: two", "◷ Queued: three"]
        assert panel(again).lines[-1] == (
            "Not sent: Ctrl+S sends the first now · Ctrl+E edits the last"
        )
        assert again_provider.records == []  # Not sent by itself.

        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(again_provider.records) == 2 and idle(again)())
        assert prompts(store, talked) == ["one", "two", "three"]
        assert queued(store, again) == []


async def test_each_conversation_keeps_its_queue_across_switches(store: Store) -> None:
    provider = ScriptedProvider(STALLING)
    async with while_replying(store, provider, queueing=["two"]) as (app, pilot):
        first = app.chat.conversation.id

        await pilot.press("ctrl+n")  # Stops the reply; the queue stays with its conversation.
        await wait_until(pilot, lambda: app.chat.conversation.id != first and idle(app)())
        assert queued(store, app) == [] and not panel(app).display

        await app.open_conversation(first)
        assert rows(app) == ["◷ Queued: two"]
        await pilot.pause()
        assert queued(store, app) == ["two"]
        assert sent(provider) == ["one"]


async def test_enter_and_esc_in_one_read_queue_the_message_once_and_keep_it_unsent(
    store: Store,
) -> None:
    provider = ScriptedProvider(STALLING, words("reply two"))
    async with while_replying(store, provider) as (app, pilot):
        composer(app).text = "two"
        pump = InputPump(app._driver.send_message)

        pump.feed("\r" + KITTY_ESCAPE, read_at=time.monotonic())  # One read: Enter, then Esc.
        await wait_until(pilot, idle(app))

        assert app.last_outcome.state is ResponseState.INTERRUPTED
        assert queued(store, app) == ["two"] and composer(app).text == ""
        assert sent(provider) == ["one"]

        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(provider.records) == 2 and idle(app)())
        assert prompts(store, app.chat.conversation.id) == ["one", "two"]
        assert queued(store, app) == []


async def test_enter_and_esc_in_one_read_as_the_reply_completes_send_nothing_twice(
    store: Store,
) -> None:
    gate = Gate()
    provider = ScriptedProvider(held_reply(gate), words("reply two"), words("reply three"))
    async with while_replying(store, provider, held_at=gate, queueing=["two"]) as (app, pilot):
        pump = InputPump(app._driver.send_message)
        show = app.chat._show_outcome
        fed: list[str] = []

        async def keys_during_wrap_up(turn, outcome) -> None:  # type: ignore[no-untyped-def]
            if not fed:
                fed.append("three\r")
                pump.feed("three\r" + KITTY_ESCAPE, read_at=time.monotonic())
            await show(turn, outcome)

        app.chat._show_outcome = keys_during_wrap_up  # type: ignore[method-assign]
        gate.opened.set()
        await wait_until(pilot, lambda: fed and idle(app)() and composer(app).text == "")
        await pilot.pause()
        await wait_until(pilot, idle(app))

        stored = prompts(store, app.chat.conversation.id)
        waiting = queued(store, app)
        # The Esc came after the reply had completed: it stops whatever the Enter or the
        # queue started, or holds the queue. Each message is kept exactly once, and the
        # provider never answered anything after the first reply.
        assert stored[0] == "one" and sorted(stored[1:] + waiting) == ["three", "two"]
        assert sent(provider) == ["one"]


# Snapshots


def bread_app(store: Store) -> tuple[ChatApp, Gate]:
    """An app for a snapshot (its clock fixed) whose reply about bread holds at the gate."""
    gate = Gate()
    script = [*words("Soda bread is a quick bread made with", end=None), gate, STALL]
    return make_app(store, ScriptedProvider(script), clock=FakeClock()), gate


async def ask_about_bread(pilot: Pilot, app: ChatApp, store: Store, gate: Gate) -> None:
    """Ask about bread and, once the reply holds at `gate`, queue a follow-up."""
    await send(pilot, "How do I bake bread without yeast?")
    await gate.reached.wait()
    await queue(pilot, app, store, "And with sourdough?")


def test_the_queue_under_a_streaming_reply(snap_compare, store: Store) -> None:
    app, gate = bread_app(store)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await ask_about_bread(pilot, app, store, gate)
        await queue(pilot, app, store, "Which flour is best?\nFor a soft crumb, I mean.")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_the_queue_after_a_stop(snap_compare, store: Store) -> None:
    app, gate = bread_app(store)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await ask_about_bread(pilot, app, store, gate)
        await esc_until_idle(pilot, app)
        await fix_stop_time(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
