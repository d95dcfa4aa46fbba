"""Holding off the garbage collector's full passes while a reply streams."""

from __future__ import annotations

import gc

NO_FULL_PASS = 1_000_000_000  # A threshold the oldest generation never reaches.


def _third_threshold_counts() -> bool:
    """Whether this Python's collector honours `gc.set_threshold`'s third value.

    A collector with three generations does (CPython 3.11 to 3.13 do; the
    tests check it on the Python they run on). The incremental collector of
    later CPythons keeps two generations, ignores the value and reports it
    as 0: it scans the old generation a slice at a time, which already keeps
    its pauses short.
    """
    saved = gc.get_threshold()
    gc.set_threshold(*saved[:2], NO_FULL_PASS)
    honoured = gc.get_threshold()[2] == NO_FULL_PASS
    gc.set_threshold(*saved)
    return honoured


HOLDS_FULL_PASSES = _third_threshold_counts()


class FullCollectionHold:
    """Keeps the collector from scanning the oldest generation until `release()`.

    A full pass walks every live object: tens to hundreds of milliseconds in a
    long session, which would stall a frame or delay an Esc. Young objects are
    still collected as usual (most of a stream's garbage dies young), and the
    full pass held off runs soon after the release. Textual pauses the
    collector during smooth scrolling for the same reason. Holds nest: the
    thresholds come back when the last one is released.

    Where `HOLDS_FULL_PASSES` is false (an incremental collector), a hold
    changes nothing: that collector has no full pass to hold off.
    """

    _held = 0
    _thresholds = gc.get_threshold()

    def __init__(self) -> None:
        cls = FullCollectionHold
        if cls._held == 0:
            cls._thresholds = gc.get_threshold()
            gc.set_threshold(*cls._thresholds[:2], NO_FULL_PASS)
        cls._held += 1
        self.released = False

    def release(self) -> None:
        """Let full passes run again (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        cls = FullCollectionHold
        cls._held -= 1
        if cls._held == 0:
            gc.set_threshold(*cls._thresholds)


class _Startup:
    paused = False  # `pause_for_startup` turned the collector off.


def pause_for_startup() -> None:
    """Turn the collector off while chatui starts, until `resume_after_startup()`.

    Importing Textual and chatui's screens, then building the first screen,
    makes tens of thousands of objects that live as long as the app; the
    collector's passes over them meanwhile free nothing and cost 10 to 40 ms
    of the first frame. Does nothing if the collector is already off.
    """
    if gc.isenabled():
        gc.disable()
        _Startup.paused = True


def freeze_imports() -> None:
    """Take what exists now (once the modules are imported) out of every later pass.

    Modules, classes and functions live as long as the process: no pass, a
    full one while a reply streams included, needs to walk them again. The
    few cycles the imports left behind stay (a few hundred objects, once).
    """
    gc.freeze()


def resume_after_startup() -> None:
    """Turn the collector back on, if `pause_for_startup()` turned it off."""
    if _Startup.paused:
        _Startup.paused = False
        gc.enable()
