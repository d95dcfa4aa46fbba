"""Holding off the garbage collector's full passes while a reply streams."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

NO_FULL_PASS = 1_000_000_000  # A threshold the oldest generation never reaches.


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Keep the collector from scanning the oldest generation inside the block.

    A full pass walks every live object: tens to hundreds of milliseconds in a
    long session, which would stall a frame or delay an Esc. Young objects are
    still collected as usual (most of a stream's garbage dies young), and the
    full pass the block held off runs soon after it, when the reply is over.
    Textual pauses the collector during smooth scrolling for the same reason.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], NO_FULL_PASS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
