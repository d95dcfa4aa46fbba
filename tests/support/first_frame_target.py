"""Run by tests/test_first_frame.py as a subprocess: the app's writes until its composer shows.

    python -m tests.support.first_frame_target DB_PATH

Prints the writes as one JSON list. In a process of its own: an app run as
if on a terminal leaves what it started (Textual's threads) behind it, and
in the tests' process that slowed the next tests' replies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from textual.driver import Driver
from textual.drivers.headless_driver import HeadlessDriver

from chatui.app import ChatApp
from chatui.config import Config
from chatui.store import Store
from tests.support.scripted import ScriptedProvider

SIZE = (100, 40)
PLACEHOLDER = "Message…"


class FrameRecorder(HeadlessDriver):
    """A terminal that keeps each write of the app: a frame is one write."""

    writes: list[str] = []

    @property
    def is_headless(self) -> bool:
        return False  # So that the app renders its frames and writes them here.

    def write(self, data: str) -> None:
        FrameRecorder.writes.append(data)


class RecordedApp(ChatApp):
    def get_driver_class(self) -> type[Driver]:
        return FrameRecorder


async def record(db_path: str) -> list[str]:
    store = Store(db_path)
    app = RecordedApp(Config(system_prompt="", db_path=db_path), store, ScriptedProvider())
    running = asyncio.create_task(app.run_async(headless=False, size=SIZE))
    deadline = time.monotonic() + 20
    while not any(PLACEHOLDER[1:] in data for data in FrameRecorder.writes):
        if running.done() or time.monotonic() > deadline:
            break  # The test says what it did not see.
        await asyncio.sleep(0.005)
    app.exit()
    await asyncio.wait_for(running, 20)
    store.close()
    return FrameRecorder.writes


if __name__ == "__main__":
    print(json.dumps(asyncio.run(record(sys.argv[1]))))
