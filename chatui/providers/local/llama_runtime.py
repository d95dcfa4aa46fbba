"""Process-wide llama.cpp plumbing: silent logging, a quiet load and a GIL-free abort flag."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

import llama_cpp

_log_lock = threading.Lock()
_log_callback: Any = None


def silence_llama_logs() -> None:
    """Route llama.cpp's log output away from the terminal (it would corrupt the screen)."""
    global _log_callback
    with _log_lock:
        if _log_callback is not None:
            return

        def _discard(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            return None

        # Kept alive for the life of the process.
        _log_callback = llama_cpp.llama_log_callback(_discard)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class _SilentOnThread:
    """A stream that drops what one thread writes and passes on every other thread's."""

    def __init__(self, stream: TextIO, thread: threading.Thread) -> None:
        self._stream, self._thread = stream, thread

    def write(self, text: str) -> int:
        if threading.current_thread() is self._thread:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty...
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_on_this_thread() -> Iterator[None]:
    """What this thread prints to sys.stdout and sys.stderr goes nowhere, meanwhile.

    For `Llama()`, which prints its model's metadata (with verbose=False it
    points fds 1 and 2 at /dev/null instead, silencing the whole process).
    `contextlib.redirect_stderr` would too: it swaps the process's stream, and
    what another thread said meanwhile (a headless run's "Stopped before the
    request was sent") was lost.
    """
    thread = threading.current_thread()
    saved = sys.stdout, sys.stderr
    quiet = [_SilentOnThread(stream, thread) if stream is not None else None for stream in saved]
    sys.stdout, sys.stderr = quiet
    try:
        yield
    finally:
        # Put back only what is still ours (something else may have swapped them since).
        if sys.stdout is quiet[0]:
            sys.stdout = saved[0]
        if sys.stderr is quiet[1]:
            sys.stderr = saved[1]


def _libc_strlen() -> Any:
    name = "msvcrt" if sys.platform == "win32" else ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        return library.strlen
    except (OSError, AttributeError):
        return None


class AbortFlag:
    """A flag that llama.cpp's graph computation polls, without taking the GIL.

    ggml calls the abort callback after every graph node, hundreds of times
    per micro-batch. A Python callback would take the GIL each time (prefill
    slowed 2.3x while the UI thread was busy); instead the callback is libc's
    `strlen` on a two-byte buffer: `""` (length 0, false) continues, `"x"`
    (length 1, true) aborts. Setting and clearing the flag is one byte write,
    safe from any thread. Falls back to a Python callback without libc.
    """

    def __init__(self) -> None:
        self._buffer = ctypes.create_string_buffer(2)
        strlen = _libc_strlen()
        if strlen is not None:
            self._callback = ctypes.cast(strlen, llama_cpp.ggml_abort_callback)
        else:
            self._callback = llama_cpp.ggml_abort_callback(lambda _data: self.is_set())
        self.gil_free = strlen is not None

    def install(self, ctx: Any) -> None:
        """Make llama_decode on `ctx` poll this flag. Keep this object alive with the context."""
        llama_cpp.llama_set_abort_callback(
            ctx, self._callback, ctypes.cast(self._buffer, ctypes.c_void_p)
        )

    def set(self) -> None:
        self._buffer[0] = b"x"

    def clear(self) -> None:
        self._buffer[0] = b"\0"

    def is_set(self) -> bool:
        return self._buffer[0] != b"\0"


def amx_present() -> bool:
    """Whether this llama.cpp build uses Intel AMX on this CPU (Sapphire Rapids and later)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def safe_model_params(params: llama_cpp.llama_model_params) -> llama_cpp.llama_model_params:
    """`params` with llama.cpp's AMX weight buffers turned off where they would be used.

    llama.cpp's AMX matrix multiply crashes the process on Q4_K weights, the
    default model's (ggml-org/llama.cpp#20824, open without a fix; seen here on
    a Xeon with AMX, in the first decode). Without the extra buffer types the
    weights stay in ordinary CPU buffers and the AVX-512 kernels run instead.
    """
    if amx_present():
        params.use_extra_bufts = False
    return params
