"""Clocks the tests control: the event loop's (`LoopClock`) and a function's (`FakeClock`).

The turn's idle deadline, a tool's timeout and a retry's wait are timers on
the event loop's clock (`loop.time()`). Tested on real timers, they either
make the suite wait or make it depend on how fast the machine is (did the
prompt take longer than the timeout here?). `LoopClock` adds an offset to the
loop's clock: `advance(seconds)` moves it on at once and returns once every
timer it made due has run. A test gives the code a timeout far longer than any
real wait, brings the code to the exact point it means (a stream that stalled,
a tool that hangs, a batch of the prompt being processed) and then says "this
much time passed here". What follows depends on the order of events, never on
the machine.

The offset stays on the loop for the rest of the test: each test has a loop of
its own, and a clock that only moves forward breaks nothing that reads it.

`FakeClock` is a `time.monotonic` stand-in that moves a fixed step each time
it is read, for code that takes a clock function (the app's stop-time figure):
its figures are the same on any machine.
"""

from __future__ import annotations

import asyncio
import itertools


class LoopClock:
    """The running loop's clock, moved on by `advance` (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.offset = 0.0
        real = self.loop.time
        # The loop reads its clock through `self.time()` for every timer it schedules
        # (call_at, call_later, sleep, timeout_at) and to decide which ones are due.
        self.loop.time = lambda: real() + self.offset  # type: ignore[method-assign]

    async def advance(self, seconds: float) -> None:
        """Move the clock on by `seconds`; on return, every timer due by then has run."""
        self.offset += seconds
        fired: asyncio.Future[None] = self.loop.create_future()
        # Due timers run in the order of their deadlines: once this one, due now, has run,
        # so has every timer that fell due before it (one of which may cancel this wait).
        self.loop.call_at(self.loop.time(), lambda: fired.done() or fired.set_result(None))
        await fired


class FakeClock:
    """A clock that advances a fixed step each time it is read: deterministic figures."""

    def __init__(self, step: float = 0.010) -> None:
        self._ticks = itertools.count()
        self.step = step

    def __call__(self) -> float:
        return next(self._ticks) * self.step
