"""Run by the headless tests as a subprocess: chatui's command, watched or held.

    python -m tests.support.headless_target CASE ARGS...

Runs `chatui ARGS` (`chatui.cli.main`) in this fresh interpreter, and:

- `modules`: then writes `loaded: NAMES` on stderr, the UI modules (Textual,
  Rich) the whole run imported;
- `held-close`: closing the provider is held for ever once the turn is over
  (it writes `closing held` on stderr first), and the stop's grace is an
  hour: only a second signal can end the process then;
- `thread-sigint`: a thread of its own sends SIGINT to itself (not to the
  main thread, asleep in the event loop) once the file named by
  `CHATUI_TEST_TRIGGER` exists, as when the kernel hands a Ctrl+C to
  llama.cpp's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from chatui import headless
from chatui.cli import main
from chatui.session import Session


def hold_the_close() -> None:
    async def close_never(self: Session) -> None:
        os.write(2, b"closing held\n")  # In one write: a signal may come right after.
        while True:  # A close that swallows its cancellation (a stuck library).
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # Never set.

    Session.close = close_never  # type: ignore[method-assign]
    headless.STOP_GRACE = headless.CLOSE_GRACE = 3600.0


def sigint_from_a_thread() -> None:
    trigger = Path(os.environ["CHATUI_TEST_TRIGGER"])

    def wait_then_signal() -> None:
        while not trigger.exists():  # The test creates it once chatui printed what it waits for.
            time.sleep(0.005)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=wait_then_signal, daemon=True).start()


def run() -> int:
    case, args = sys.argv[1], sys.argv[2:]
    if case == "held-close":
        hold_the_close()
    elif case == "thread-sigint":
        sigint_from_a_thread()
    code = main(args)
    if case == "modules":
        ui = sorted(name for name in sys.modules if name.split(".")[0] in ("textual", "rich"))
        print("loaded:", *ui, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(run())
