"""`chatui` run headless as a real subprocess: its config, its output as it comes, its exit.

`Headless` starts `python -m chatui ARGS` (or another module, such as
`tests.support.headless_target`) with its stdout and stderr on pipes read
by threads, so a test can wait for a condition on what it has printed so
far (`wait_for`), send it a signal, close its stdout, and read its exit
code. Every wait is bounded: a bound on a hang, never pacing.

`environment` writes a config file and points chatui at it, at a store in
the test's directory, and at caches and logs there too; `remote_config` and
`local_config_toml` are the config for a wire server or the tiny GGUF.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatui.messages import Conversation
from chatui.store import Store
from tests.support.remote import SECRET, Wire
from tests.support.wire import WireServer

ROOT = Path(__file__).resolve().parent.parent.parent
BOUND = 60.0  # Seconds: a bound on a hang (a run here takes about a second).


def environment(tmp_path: Path, config: str) -> dict[str, str]:
    """chatui's environment: `config` as its config file, its store and caches in `tmp_path`."""
    path = tmp_path / "config.toml"
    path.write_text(config)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "ANTHROPIC_", "CHATUI_"))
    }
    return {
        **env,
        "CHATUI_CONFIG": str(path),
        "CHATUI_DB": str(db_path(tmp_path)),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "TERM": "xterm-256color",
    }


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat.sqlite3"


def remote_config(wire: Wire, server: WireServer, extra: str = "") -> str:
    """A config on `wire`'s API at `server`, with the test key; `extra`: more TOML."""
    return (
        f'provider = "{wire.name}"\n{extra}\n'
        f"[{wire.name}]\n"
        f'api_key = "{SECRET}"\n'
        f'base_url = "{wire.api_url(server.base_url)}"\n'
        'model = "wire-model"\n'
    )


def local_config_toml(model: Path, max_tokens: int = 8) -> str:
    """A config on the tiny GGUF, as `tests.support.local.local_config` sets it up."""
    from chatui.providers.local.chat_format import GEMMA_TEMPLATE

    return (
        'provider = "local"\n[local]\n'
        f"model_path = {json.dumps(str(model))}\n"
        f"n_ctx = 1024\nmax_tokens = {max_tokens}\nn_threads = 2\n"
        "temperature = 0.0\nrepeat_penalty = 1.0\n"
        f"chat_template = {json.dumps(GEMMA_TEMPLATE)}\n"
    )


class Headless:
    """A running chatui: what it has written so far, signals, and its exit code."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        stdin: bytes | int | None = subprocess.DEVNULL,
        module: str = "chatui",
        read_stdout: bool = True,
    ) -> None:
        """`read_stdout` False: the test reads stdout itself (`head_line`), as `head -1` would."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE if isinstance(stdin, bytes) else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        self._out = bytearray()
        self._err = bytearray()
        self._changed = threading.Condition()
        self._stdout_closed = False
        streams = [(self.process.stderr, self._err)]
        if read_stdout:
            streams.append((self.process.stdout, self._out))
        self._readers = [
            threading.Thread(target=self._read, args=stream, daemon=True) for stream in streams
        ]
        for reader in self._readers:
            reader.start()
        if isinstance(stdin, bytes):
            assert self.process.stdin is not None
            self.process.stdin.write(stdin)
            self.process.stdin.close()

    def _read(self, stream: Any, into: bytearray) -> None:
        fd = stream.fileno()
        while True:
            data = os.read(fd, 65536)
            with self._changed:
                into.extend(data)
                self._changed.notify_all()
            if not data:
                return

    @property
    def stdout(self) -> str:
        with self._changed:
            return self._out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._changed:
            return self._err.decode(errors="replace")

    def wait_for(self, condition: Callable[[], object], timeout: float = BOUND) -> None:
        """Poll until `condition()` holds (it may read `stdout`, `stderr`, a server); else fail.

        Woken by each piece of output, and at least every 10 ms for other conditions.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                for reader in self._readers:  # All it wrote, before the last look.
                    reader.join(BOUND)
                if condition():
                    return
                raise AssertionError(f"chatui exited first: {self.stdout!r} {self.stderr!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen in {timeout} s; stderr: {self.stderr!r}")
            with self._changed:
                self._changed.wait(0.01)

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def head_line(self, timeout: float = BOUND) -> str:
        """Read stdout up to its first line's end, then close it: `head -1` (read_stdout False).

        chatui's next write then fails with EPIPE, as in `chatui -p … | head -1`.
        """
        stdout = self.process.stdout
        assert stdout is not None and not self._readers[1:]
        deadline, line = time.monotonic() + timeout, b""
        while b"\n" not in line:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            data = os.read(stdout.fileno(), 1) if ready else b""
            if not data:
                raise AssertionError(f"no line in {timeout} s: {line!r} {self.stderr!r}")
            line += data
        stdout.close()
        return line.decode()

    def exit_code(self, timeout: float = BOUND) -> int:
        """Its exit code once it has exited and its output is read (killed past `timeout`)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"chatui did not exit in {timeout} s: {self.stderr!r}") from None
        for reader in self._readers:
            reader.join(BOUND)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run(args: Sequence[str], env: dict[str, str], **options: Any) -> tuple[int, str, str]:
    """Run chatui to its end: (exit code, stdout, stderr)."""
    chatui = Headless(args, env, **options)
    try:
        return chatui.exit_code(), chatui.stdout, chatui.stderr
    finally:
        chatui.kill()


def conversations(tmp_path: Path) -> list[Conversation]:
    """Every stored conversation, most recent first (read through a store of the test's)."""
    store = Store(db_path(tmp_path))
    try:
        return [store.load_conversation(cid) for cid, _title in store.list_conversations()]
    finally:
        store.close()
