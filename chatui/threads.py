"""Threads that can never keep chatui from quitting.

A blocking call cannot be interrupted: a tool reading a named pipe, or one
that simply never returns, holds its thread for ever. On the event loop's
default executor (`asyncio.to_thread`) such a thread is waited for without
limit, twice: by `asyncio.run`'s shutdown of that executor, and at
interpreter exit, where `concurrent.futures` joins every pool thread. So:

- `in_daemon_thread` runs one call on a daemon thread of its own and awaits
  its outcome. Nothing joins a daemon thread (`threading._shutdown` waits for
  non-daemon threads only); a call that is cancelled or never returns is left
  behind, and its outcome dropped.
- `DaemonThreadExecutor` is a default executor for the event loop made the
  same way, so that whatever else uses `asyncio.to_thread` cannot hang the
  loop's shutdown either.
- `ExitDeadline` is the last resort: once quitting has begun, it ends the
  process at a deadline, whatever still waits (a task that swallows its
  cancellation, a stuck library).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_daemon_thread(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` on a daemon thread of its own, awaited.

    It runs in a copy of the caller's context (like `asyncio.to_thread`).
    Whatever it raises is raised here, `BaseException`s included: the caller
    decides what a `SystemExit` from it means. Cancelling the await leaves
    the thread to finish on its own; its outcome is dropped.
    """
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_DAEMONS, call)


class DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that runs each call on a new daemon thread and never waits for one.

    A `ThreadPoolExecutor` only in name (the event loop accepts no other as
    its default): `shutdown()` returns at once, and no thread of it is joined
    at exit.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=1)  # Unused: no pool thread is ever started.
        self._closed = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        name = getattr(fn, "__name__", "call")
        threading.Thread(target=work, name=f"chatui executor {name}", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True  # Running calls are left to finish, or not, on their own.


class ExitDeadline:
    """A moment past which this process ends itself, however stuck its quitting is.

    `set(seconds)` gives the process that long to end (an earlier deadline
    stands). Past the deadline, a watcher thread runs `before_exit` (restore
    the terminal, say) and calls `os._exit(code)`, skipping whatever still
    waits. `set()` takes no lock, so a signal handler may call it while the
    main thread is stuck anywhere: it wakes the watcher through a pipe.
    """

    def __init__(self, before_exit: Callable[[], None] = lambda: None, code: int = 1) -> None:
        self._before_exit = before_exit
        self._code = code
        self._at = math.inf
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._watcher = threading.Thread(target=self._watch, name="chatui exit", daemon=True)
        self._watcher.start()

    def set(self, seconds: float) -> None:
        """End the process `seconds` from now at the latest."""
        self._at = min(self._at, time.monotonic() + max(seconds, 0.0))
        with contextlib.suppress(OSError):  # A full pipe has woken the watcher already.
            os.write(self._wake_write, b"\0")

    @property
    def remaining(self) -> float:
        """Seconds left before the process ends itself (infinite if not set)."""
        return self._at - time.monotonic()

    def _watch(self) -> None:
        while (left := self.remaining) > 0:
            wait = None if left == math.inf else left
            ready, _, _ = select.select([self._wake_read], [], [], wait)
            if ready:
                os.read(self._wake_read, 4096)
        with contextlib.suppress(Exception):
            self._before_exit()
        os._exit(self._code)


_DAEMONS = DaemonThreadExecutor()  # Never shut down: it holds no thread to wait for.
