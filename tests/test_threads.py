"""Threads that cannot keep chatui from quitting: the loop's executor, and the exit deadline."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from chatui.threads import DaemonThreadExecutor

ROOT = Path(__file__).resolve().parent.parent


def test_the_loops_shutdown_never_waits_for_a_call_left_in_its_executor() -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(DaemonThreadExecutor())
        started = asyncio.Event()

        def block() -> None:
            threads.append(threading.current_thread())
            loop.call_soon_threadsafe(started.set)
            release.wait()

        call = asyncio.ensure_future(asyncio.to_thread(block))
        await started.wait()
        call.cancel()  # Given up on while it runs, as a tool's timeout gives up on a call.

    started = time.monotonic()
    try:
        asyncio.run(main())  # Its shutdown of the default executor would wait for `block`.
        assert time.monotonic() - started < 5
        (thread,) = threads
        assert thread.daemon and thread.is_alive()
    finally:
        release.set()


def test_past_its_deadline_the_process_ends_itself_whatever_still_waits() -> None:
    """A non-daemon thread that never ends would hold the interpreter's exit for ever."""
    program = textwrap.dedent(
        """
        import os, threading
        from chatui.threads import ExitDeadline

        deadline = ExitDeadline(before_exit=lambda: os.write(1, b"restored\\n"))
        threading.Thread(target=threading.Event().wait).start()  # Never ends; joined at exit.
        deadline.set(0.2)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (1, "restored\n")
    assert time.monotonic() - started < 10
