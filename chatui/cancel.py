"""A thread-safe, idempotent cancellation token bound to one turn."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable


class CancelToken:
    """Says whether a turn was asked to stop; `cancel()` may be called from any thread.

    The first `cancel()` wins: it sets the flag and runs the registered
    callbacks once, in the calling thread. Later calls do nothing. A callback
    registered after the cancellation runs at once, so a cancel that arrives
    before the work began is never lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> bool:
        """Request the stop. Returns True only for the call that cancelled."""
        with self._lock:
            if self._cancelled:
                return False
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return True

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` on cancellation (now, if already cancelled).

        Returns a function that unregisters the callback.
        """
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def _remove(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._callbacks.remove(callback)
