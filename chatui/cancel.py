"""A thread-safe, idempotent cancellation token bound to one turn."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from contextvars import ContextVar


class CancelToken:
    """Says whether a turn was asked to stop; `cancel()` may be called from any thread.

    The first `cancel()` wins: later calls do nothing and return False. Once
    the token is cancelled its callbacks run once; a callback registered after
    that runs at once, so a cancel that arrives before the work began is never
    lost.

    A token bound to an event loop (`bind()`) changes state only on that
    loop's thread. `cancel()` from another thread marks the stop `requested`
    and schedules the change there, so code running on the loop between two
    awaits sees one value of `cancelled`: a turn's check, its store write and
    the UI event that follows cannot be split by a stop from another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []  # Their results are ignored.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the stop has taken effect (on the bound loop's thread, if bound)."""
        return self._cancelled

    @property
    def requested(self) -> bool:
        """Whether `cancel()` was called, even if the stop has not taken effect yet."""
        return self._requested

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Apply stops on `loop`'s thread from now on. Call it from that thread."""
        with self._lock:
            self._loop, self._loop_thread = loop, threading.get_ident()

    def unbind(self) -> None:
        """Apply later stops in the calling thread again (the loop may be gone)."""
        with self._lock:
            self._loop = self._loop_thread = None

    def cancel(self) -> bool:
        """Request the stop. Returns True only for the first call."""
        with self._lock:
            if self._requested:
                return False
            self._requested = True
        self._apply()
        return True

    def _apply(self) -> None:
        """Take effect here, or on the bound loop's thread if this is another one."""
        with self._lock:
            if self._cancelled:
                return
            loop = self._loop
            elsewhere = loop is not None and threading.get_ident() != self._loop_thread
            if not elsewhere:
                self._cancelled = True
                callbacks, self._callbacks = self._callbacks, []
        if elsewhere:
            assert loop is not None
            try:
                loop.call_soon_threadsafe(self._apply)
                return
            except RuntimeError:  # The loop is closed: nothing runs there any more.
                self.unbind()
                self._apply()
                return
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run `callback` on cancellation (now, if already cancelled); its result is ignored.

        Returns a function that unregisters the callback.
        """
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def _remove(self, callback: Callable[[], object]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)


current_token: ContextVar[CancelToken | None] = ContextVar("chatui_turn_token", default=None)
"""The running turn's token, in the turn's tasks (its tools run there).

Work that a stop must end before the event loop next runs the task (a
shell's process group, killed the moment Esc is handled rather than at the
task's next step) registers with `current_token.get().on_cancel()`.
"""


def stop_requested() -> bool:
    """Whether the code running now is being stopped: its turn's stop, or its task's cancel.

    Only such a stop may be called "cancelled by the user": a `CancelledError`
    raised while neither holds came from the work itself (a library that
    cancelled its own task), and is an error like any other.
    """
    token = current_token.get()
    task = asyncio.current_task()
    return (token is not None and token.requested) or (task is not None and task.cancelling() > 0)


def tried_to_exit(who: str, error: BaseException) -> str:
    """What to say of `who` (a tool, a provider) raising SystemExit, KeyboardInterrupt or the like.

    Such an exception must never leave a task: asyncio re-raises it out of the
    event loop, and chatui would end with it.
    """
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return f"{who} tried to exit the program ({what}); it was stopped there, and chatui goes on."
