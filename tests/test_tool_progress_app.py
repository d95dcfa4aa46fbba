"""A running call's progress on screen: the bar moves with each report and stops at the stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from chatui.app import ChatApp
from chatui.config import Config
from chatui.mcp.events import CancelSent, StatusChanged
from chatui.mcp.status import ServerState, ServerStatus
from chatui.providers.base import StreamEnd, ToolSpec
from chatui.screens.turn_view import CANCEL_NEWS_WAIT
from chatui.store import Store
from chatui.tools.protocol import ToolProgress
from chatui.tools.registry import CallContext, ToolRegistry
from chatui.turn import ToolStatusChanged, TurnEvent
from chatui.widgets.tool_call import ToolCallView
from tests.support.app import fix_stop_time, make_app, screen_text, send, settled, wait_until
from tests.support.clocks import FakeClock, LoopClock
from tests.support.mcp import START_DEADLINE, Record, stdio_config
from tests.support.scripted import ScriptedProvider, tool_call, words

SIZE = (80, 24)


class Ticker:
    """A tool that reports each progress the test hands it, and ends when handed None.

    Stopped, it tries to report once more before it lets the stop through:
    nothing may show it.
    """

    name = "ticker"
    server_name, tool_name = "files", "ticker"  # It stands for an MCP server's tool.
    needs_approval = False
    timeout = 60.0
    spec = ToolSpec("ticker", "Counts.", {"type": "object", "properties": {}})

    def __init__(self) -> None:
        self.reports: asyncio.Queue[ToolProgress | None] = asyncio.Queue()
        self.shown = 0  # Reports handed to the turn (awaited: on screen when this grows).
        self.cancelled = asyncio.Event()

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments

    async def call(self, arguments: dict[str, Any], context: CallContext) -> str:
        try:
            while (progress := await self.reports.get()) is not None:
                await context.progress(progress)
                self.shown += 1
        except asyncio.CancelledError:
            self.cancelled.set()
            await context.progress(ToolProgress(99, 100, "LATE after the stop"))
            raise
        return "counted"


class BuiltInTicker(Ticker):
    """The same tool, built in: no MCP server runs it."""

    server_name = tool_name = ""


def ticking(store: Store, *, then: list | None = None, ticker: Ticker | None = None):  # type: ignore[no-untyped-def]
    ticker = ticker or Ticker()
    script = [*tool_call(0, "c1", "ticker", ["{}"]), StreamEnd("tool_calls")]
    provider = ScriptedProvider(script, then or words("Counted."))
    app = make_app(store, provider, clock=FakeClock(), tools=ToolRegistry([ticker]))
    return app, ticker


def the_view(app) -> ToolCallView:  # type: ignore[no-untyped-def]
    (view,) = app.chat.query(ToolCallView)
    return view


async def report(pilot, ticker: Ticker, progress: ToolProgress) -> None:  # type: ignore[no-untyped-def]
    """Hand the tool one report; return once the turn has shown it."""
    before = ticker.shown
    ticker.reports.put_nowait(progress)
    await wait_until(pilot, lambda: ticker.shown > before)
    await pilot.pause()


async def running(pilot, app, prompt: str) -> None:  # type: ignore[no-untyped-def]
    """Send `prompt`; return once its tool call runs."""
    await send(pilot, prompt)
    await wait_until(pilot, lambda: bool(app.chat.query(ToolCallView)))
    await wait_until(pilot, lambda: the_view(app).status == "running")


def progress_text(app) -> str:  # type: ignore[no-untyped-def]
    return the_view(app).progress_line.render().plain  # type: ignore[union-attr]


async def test_the_progress_bar_moves_with_each_report_and_stops_at_the_stop(store: Store) -> None:
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        assert not the_view(app).progress_line.display  # No report yet: no bar.

        await report(pilot, ticker, ToolProgress(1, 4, "reading"))
        line = the_view(app).progress_line
        assert line.display
        assert "25%" in progress_text(app) and "1/4 · reading" in progress_text(app)

        await report(pilot, ticker, ToolProgress(3, 4, "writing"))
        assert "75%" in progress_text(app) and "3/4 · writing" in progress_text(app)
        assert "75%" in screen_text(app)

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert ticker.cancelled.is_set()
        view = the_view(app)
        assert view.status == "cancelled"
        # Where it was at the stop: the report the tool tried after it moved nothing.
        assert line.progress == ToolProgress(3, 4, "writing")
        assert "75%" in progress_text(app) and "LATE" not in screen_text(app)
        assert line.display  # It shows how far the stopped call got.


async def test_a_report_after_the_stop_moves_nothing(store: Store) -> None:
    """Even one that reached the view after the stop (an MCP server's, say) is dropped."""
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(2, 10, "two"))
        turn_view = app.chat.turn_view
        view = the_view(app)

        app.chat.action_stop()  # The stop is drawn; the turn's task has not seen it yet.
        late = ToolStatusChanged("c1", "running", ToolProgress(9, 10, "nine"))
        await turn_view.on_event(TurnEvent(app.chat.turn.id, late))
        assert view.show_progress(ToolProgress(8, 10, "eight")) is False
        assert view.progress_line.progress == ToolProgress(2, 10, "two")
        await wait_until(pilot, settled(app))
        assert "20%" in progress_text(app) and "nine" not in screen_text(app)


async def test_without_a_total_the_bar_counts_and_its_marker_moves(store: Store) -> None:
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(1, None, "copied 1 file"))
        first = the_view(app).progress_line.render()
        await report(pilot, ticker, ToolProgress(2.5, None, "copied 2.5 files"))
        second = the_view(app).progress_line.render()

        assert "%" not in second.plain and "  2.5 · copied 2.5 files" in second.plain
        assert first.plain.startswith("━" * 20) and second.plain.startswith("━" * 20)
        assert first.spans != second.spans  # The marker moved along the bar.


async def test_a_progress_message_is_shown_literally_on_one_line(store: Store) -> None:
    app, ticker = ticking(store)
    message = "[bold red]not markup[/]\x1b[2J\x1b]0;pwned\x07\nsecond line"
    async with app.run_test(size=(120, 24)) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(1, 2, message))

        text = progress_text(app)
        assert "[bold red]not markup[/]␛[2J␛]0;pwned␇ second line" in text
        assert "\x1b" not in text and "\n" not in text
        assert "[bold red]not markup[/]␛[2J" in screen_text(app)


async def test_hundreds_of_reports_repaint_the_bar_and_lay_nothing_out(
    store: Store, monkeypatch
) -> None:
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(0, 300, "start"))  # The one layout: it shows.
        line = the_view(app).progress_line
        refreshes: list[bool] = []
        refresh = line.refresh

        def recorded(*regions, layout: bool = False, **kw):  # type: ignore[no-untyped-def]
            refreshes.append(layout)
            return refresh(*regions, layout=layout, **kw)

        monkeypatch.setattr(line, "refresh", recorded)
        for done in range(1, 301):
            ticker.reports.put_nowait(ToolProgress(done, 300, f"item {done}"))
        await wait_until(pilot, lambda: ticker.shown == 301)
        await pilot.pause()

        assert "100%" in progress_text(app) and "300/300 · item 300" in progress_text(app)
        assert len(refreshes) >= 300 and not any(refreshes)  # Repainted; never laid out.


async def test_a_call_that_ends_hides_its_bar(store: Store) -> None:
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(1, 2, "half"))
        ticker.reports.put_nowait(None)
        await wait_until(pilot, settled(app))

        view = the_view(app)
        assert view.status == "done" and not view.progress_line.display
        assert "half" not in screen_text(app)


def test_a_call_with_progress_running(snap_compare, store: Store) -> None:
    app, ticker = ticking(store)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await running(pilot, app, "count the files")
        await report(pilot, ticker, ToolProgress(7, 20, "copying notes/2026-12.md"))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_a_call_with_progress_stopped(snap_compare, store: Store) -> None:
    app, ticker = ticking(store)

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await running(pilot, app, "count the files")
        await report(pilot, ticker, ToolProgress(3, None, "3 files so far"))
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await fix_stop_time(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_a_real_mcp_calls_progress_moves_the_bar_and_its_stop_says_the_cancel_was_sent(
    store: Store, tmp_path: Path, monkeypatch
) -> None:
    """The SDK's own server, the app's own manager: progress on the bar; Esc; "cancel sent"."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # The servers' logs.
    record = Record(tmp_path / "record.jsonl")
    config = Config(system_prompt="", db_path=str(store.path))
    config.mcp.servers["srv"] = stdio_config("srv", "standard", record.path, ask=False)
    script = [*tool_call(0, "c1", "srv__slow", ['{"seconds": 60}']), StreamEnd("tool_calls")]
    app = ChatApp(config, store, ScriptedProvider(script, words("Stopped.")), clock=FakeClock())
    async with app.run_test(size=SIZE) as pilot:
        registry = app.session.tools
        await wait_until(pilot, lambda: "srv__slow" in registry, START_DEADLINE)  # type: ignore[operator]
        await send(pilot, "sleep a minute")
        await wait_until(pilot, lambda: bool(app.chat.query(ToolCallView)))
        line = the_view(app).progress_line
        await wait_until(pilot, lambda: line.progress is not None and line.progress.done >= 2)
        assert "/1200 · step " in progress_text(app)  # 60 s in steps of 0.05 s.

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        at_stop = line.progress
        view = the_view(app)
        assert view.status == "cancelled"
        await wait_until(pilot, lambda: "cancel sent to srv" in str(view._head.render()))
        (started,) = record.find("start", tool="slow")
        await record.until(lambda: record.cancelled(started["rid"]))  # On the wire, by its id.
        await record.until(lambda: record.find("handler_cancelled", rid=started["rid"]))
        await pilot.pause()
        assert line.progress == at_stop  # Nothing after the stop moved it.
        assert "cancelled by you · cancel sent to srv" in screen_text(app)


class Listeners:
    """The manager's `subscribe`, as the turn's view uses it: the test tells the events."""

    def __init__(self) -> None:
        self.listeners: list = []

    def subscribe(self, listener):  # type: ignore[no-untyped-def]
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def tell(self, event: object) -> None:
        for listener in list(self.listeners):
            listener(event)


async def test_the_cancel_sent_note_names_the_server_and_only_its_call(store: Store) -> None:
    app, _ = ticking(store)
    manager = Listeners()
    async with app.run_test(size=SIZE) as pilot:
        app.mcp = manager  # type: ignore[attr-defined]
        await running(pilot, app, "count")
        assert manager.listeners == []  # Nothing to hear before a stop.
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        view = the_view(app)
        assert len(manager.listeners) == 1
        assert str(view._head.render()).endswith("cancelled by you")

        manager.tell(CancelSent("another-call", "srv"))
        manager.tell(StatusChanged(ServerStatus("srv", "stdio", ServerState.READY)))
        assert str(view._head.render()).endswith("cancelled by you")
        manager.tell(CancelSent("c1", "[b]srv\x1b[31m"))
        await pilot.pause()
        assert str(view._head.render()).endswith("cancelled by you · cancel sent to [b]srv␛[31m")
        assert manager.listeners == []  # Every stopped call heard: it listens no more.


async def test_a_view_stops_listening_for_cancels_that_never_come(store: Store) -> None:
    """A call stopped before its request went out (its server was starting) hears nothing."""
    app, _ = ticking(store)
    manager = Listeners()
    async with app.run_test(size=SIZE) as pilot:
        clock = LoopClock()
        app.mcp = manager  # type: ignore[attr-defined]
        await running(pilot, app, "count")
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        assert len(manager.listeners) == 1

        await clock.advance(CANCEL_NEWS_WAIT - 1)
        assert len(manager.listeners) == 1  # Still listening...
        await clock.advance(2)
        assert manager.listeners == []  # ...and no more, past the wait.


async def test_a_stopped_built_in_call_listens_for_no_cancel_news(store: Store) -> None:
    """No server will say its cancel was sent: nothing waits for it (the stop's frame included)."""
    app, _ = ticking(store, ticker=BuiltInTicker())
    manager = Listeners()
    async with app.run_test(size=SIZE) as pilot:
        app.mcp = manager  # type: ignore[attr-defined]
        await running(pilot, app, "count")
        await pilot.press("escape")
        await wait_until(pilot, settled(app))

        assert the_view(app).status == "cancelled"
        assert manager.listeners == []


def test_a_stopped_mcp_call_whose_cancel_was_sent(snap_compare, store: Store) -> None:
    app, ticker = ticking(store)
    manager = Listeners()

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        app.mcp = manager  # type: ignore[attr-defined]
        await running(pilot, app, "count the files")
        await report(pilot, ticker, ToolProgress(12, 20, "copying notes/2026-12.md"))
        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        manager.tell(CancelSent("c1", "files"))
        await fix_stop_time(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_a_progress_of_infinities_or_nan_shows_a_count_and_keeps_the_app_running(
    store: Store,
) -> None:
    """JSON numbers past a double's range are infinite (1e400/1e400 is NaN): no fraction then."""
    app, ticker = ticking(store)
    inf, nan = float("inf"), float("nan")
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        for progress in (ToolProgress(inf, inf), ToolProgress(nan, 5), ToolProgress(2, nan)):
            await report(pilot, ticker, progress)
            text = progress_text(app)
            assert "%" not in text and text.startswith("━" * 20)
        await report(pilot, ticker, ToolProgress(1, 4, "back to sense"))
        assert "25%  1/4 · back to sense" in progress_text(app)
        assert "25%" in screen_text(app)
        ticker.reports.put_nowait(None)
        await wait_until(pilot, settled(app))
        assert the_view(app).status == "done"


async def test_a_call_short_of_its_total_never_shows_a_full_bar_or_100_percent(
    store: Store,
) -> None:
    """1999 of 2000 is 99%, and a cell short: a stopped call must not look finished."""
    app, ticker = ticking(store)
    async with app.run_test(size=SIZE) as pilot:
        await running(pilot, app, "count")
        await report(pilot, ticker, ToolProgress(1999, 2000, "almost"))
        line = the_view(app).progress_line
        assert " 99%  1999/2000 · almost" in progress_text(app)
        bar = line.get_component_rich_style("progress--bar")
        filled = sum(span.end - span.start for span in line.render().spans if span.style == bar)
        assert filled == 19

        await report(pilot, ticker, ToolProgress(2000, 2000, "all"))
        assert "100%  2000/2000" in progress_text(app)
