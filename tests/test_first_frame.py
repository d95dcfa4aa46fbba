"""The first frame: whole, and drawn before anything it does not show is imported.

Textual, chatui's screens and the start of the conversation are all a first
frame waits for: what only a reply, a dialog, a palette entry, a tool, a
headless run or an export needs is imported when first used. And the frame
the app draws first is the whole chat screen: the composer and the status
line come in it, not a refresh later. The garbage collector, off while
chatui starts (it would walk tens of thousands of objects that live as long
as the app), is on again once that frame is drawn.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pyte

from chatui.app import ChatApp
from chatui.config import Config
from chatui.gc_pause import pause_for_startup
from chatui.store import Store
from tests.support.scripted import ScriptedProvider

ROOT = Path(__file__).resolve().parent.parent
SIZE = (100, 40)
PLACEHOLDER = "Message…"
STATUS = re.compile(r"^ (?!│)\S+(?: · [^│]*)? │ \S")  # " provider[ · model] │ state".

# Imported only when used: each takes milliseconds that the first frame does without.
NOT_AT_START = (
    "chatui.headless",  # `chatui -p`.
    "chatui.export",  # `chatui export`, the palette's export.
    "chatui.screens.export_action",
    "chatui.widgets.reply_markdown",  # The first reply shown.
    "markdown_it",
    "textual.widgets._markdown",
    "chatui.screens.turn_view",  # The first turn.
    "chatui.screens.conversations",  # Ctrl+O.
    "chatui.screens.model_switcher",  # Ctrl+L.
    "chatui.screens.system_prompt",  # The palette's system prompt.
    "chatui.screens.mcp_servers",  # The palette's MCP servers.
    "zoneinfo",  # The current_datetime tool.
    "chatui.providers.base",  # The stream's events and the request: the first turn.
    "chatui.history",
    "chatui.stream_redact",
    "chatui.tools.builtin",  # The tools: made just after the first frame.
    "chatui.tools.registry",
    "chatui.tools.protocol",
    "chatui.screens.approval",  # The first call that asks.
)


def test_the_app_imports_nothing_its_first_frame_does_not_show() -> None:
    check = (
        "import sys, chatui.cli, chatui.app\n"
        f"print(*sorted(n for n in {NOT_AT_START!r} if n in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def first_frame(writes: list[str]) -> list[str]:
    """The terminal's rows once the first write that drew anything on it is shown."""
    screen = pyte.Screen(*SIZE)
    stream = pyte.Stream(screen)
    for data in writes:
        stream.feed(data)
        if any(row.strip() for row in screen.display):
            return list(screen.display)
    return []


def test_the_first_frame_shows_the_composer_and_the_status_line(tmp_path: Path) -> None:
    """A screen pushed while Textual held its first frames back lost its first frame."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.first_frame_target", str(tmp_path / "db.sqlite3")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    writes = json.loads(result.stdout)
    assert any(PLACEHOLDER[1:] in data for data in writes), "no composer drawn"

    rows = first_frame(writes)
    assert any(PLACEHOLDER in row for row in rows), "\n".join(rows)
    assert any(STATUS.match(row) for row in rows), "\n".join(rows)


async def test_the_collector_paused_for_the_start_is_on_again_after_the_first_frame(
    store: Store,
) -> None:
    pause_for_startup()  # As `chatui.cli.run_app` does, before importing the app.
    try:
        assert not gc.isenabled()
        app = ChatApp(Config(system_prompt="", db_path=str(store.path)), store, ScriptedProvider())
        async with app.run_test() as pilot:
            deadline = time.monotonic() + 20
            while not gc.isenabled():
                assert time.monotonic() < deadline, "the collector stayed off"
                await pilot.pause(0.005)
            assert app.chat.query_one("#composer").is_mounted
    finally:
        gc.enable()
