"""The `chatui` command: flags, config, store, provider, then the app.

The process ends when the app does, within a bounded time, whatever is
left running: once quitting begins, an `ExitDeadline` ends the process if
the exit hangs (a tool's task that swallows its cancellation, a thread that
never returns), putting the terminal back as it was if the app could not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from chatui import __version__
from chatui.config import PROVIDERS, Config, ConfigError, load_config
from chatui.providers.base import Provider, ProviderError
from chatui.providers.registry import create_provider
from chatui.store import Store, StoreError, default_db_path
from chatui.threads import ExitDeadline

if TYPE_CHECKING:
    from chatui.tools.protocol import ToolRunner

# What Textual turns on (the alternate screen, mouse reports, bracketed paste, focus
# events, the kitty keyboard protocol, a hidden cursor), turned off again.
TERMINAL_RESET = (
    "\x1b[<u\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?1016l\x1b[?2004l"
    "\x1b[?2048l\x1b[?1004l\x1b[?7h\x1b[?1049l\x1b[?25h"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chatui", description=__doc__)
    parser.add_argument("--config", type=Path, help="config file (default: user config dir)")
    parser.add_argument("--provider", choices=PROVIDERS, help="model provider to use")
    parser.add_argument("--model", help="model name (or GGUF path for the local provider)")
    parser.add_argument("--db", type=Path, help="conversation database (env: CHATUI_DB)")
    parser.add_argument(
        "-p",
        "--print",
        dest="prompt",
        metavar="PROMPT",
        help="answer PROMPT without the full-screen UI and print the reply ('-': read stdin)",
    )
    parser.add_argument(
        "--json", action="store_true", help="with -p: one JSON object per event, one per line"
    )
    parser.add_argument(
        "--allow-tool",
        dest="allowed_tools",
        action="append",
        default=[],
        metavar="NAME",
        help="with -p: let the model run tool NAME that asks for approval (repeatable)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "-c",
        "--continue",
        dest="resume_last",
        action="store_true",
        help="go on with the last conversation",
    )
    which.add_argument("--resume", metavar="ID", help="go on with conversation ID")
    parser.add_argument("--version", action="version", version=f"chatui {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["export"]:
        from chatui.export_command import export_main

        return export_main(arguments[1:])
    args = parse_args(arguments)
    try:
        config = load_config(
            args.config,
            overrides={
                "provider": args.provider,
                "model": args.model,
                "db_path": str(args.db) if args.db else None,
            },
        )
    except ConfigError as error:
        print(f"chatui: config error: {error}", file=sys.stderr)
        return 2
    try:
        store = Store(Path(config.db_path).expanduser() if config.db_path else default_db_path())
    except StoreError as error:
        print(f"chatui: {error}", file=sys.stderr)
        return 2
    if no_terminal := terminal_problem():  # Said after the config's and the store's errors.
        # The full-screen UI would draw into a pipe or a file, and wait for keys forever.
        store.close()
        print(f"chatui needs a terminal: {no_terminal}. Run it in a terminal.", file=sys.stderr)
        return 2

    provider, problem = None, None
    try:
        provider = create_provider(config)
    except ProviderError as error:
        problem = str(error)
    return run_app(config, store, provider, provider_error=problem)


def terminal_problem() -> str | None:
    """Why stdin or stdout is not a terminal ("stdin is not a terminal (a pipe)"), or None."""
    problems = [
        f"{name} is not a terminal ({what})"
        for name, stream in (("stdin", sys.__stdin__), ("stdout", sys.__stdout__))
        if (what := _not_a_terminal(stream)) is not None
    ]
    return ", and ".join(problems) or None


def _not_a_terminal(stream: TextIO | None) -> str | None:
    """What `stream` is instead of a terminal (a pipe, a file, /dev/null), or None for one."""
    try:
        fd = stream.fileno() if stream is not None else -1
        if os.isatty(fd):
            return None
        mode = os.fstat(fd)
    except (OSError, ValueError):
        return "closed"
    if stat.S_ISFIFO(mode.st_mode):
        return "a pipe"
    if stat.S_ISREG(mode.st_mode):
        return "a file"
    if stat.S_ISSOCK(mode.st_mode):
        return "a socket"
    with contextlib.suppress(OSError):
        if os.path.samestat(mode, os.stat(os.devnull)):
            return os.devnull
    return "a device"


def run_app(
    config: Config,
    store: Store,
    provider: Provider | None,
    *,
    provider_error: str | None = None,
    tools: ToolRunner | Literal["config"] | None = "config",
) -> int:
    """Run chatui's app on this terminal until it quits; the process ends soon after.

    Closes `store`. Past the app's exit, the process has `EXIT_GRACE`
    seconds to end (a thread that never returns may hold up the interpreter's
    exit); past that, or past a quit's deadline, it ends itself with status 1.
    """
    from chatui.app import EXIT_GRACE, ChatApp, kill_mcp_servers  # Textual is slow to import.

    restore_terminal = _terminal_restorer()
    app: ChatApp | None = None

    def give_back_the_terminal() -> None:
        kill_mcp_servers()  # Ending at the deadline: no MCP server outlives chatui.
        if restore_terminal is not None and (app is None or not app.terminal_released):
            restore_terminal()

    deadline = ExitDeadline(before_exit=give_back_the_terminal)
    try:
        app = ChatApp(
            config,
            store,
            provider,
            provider_error=provider_error,
            tools=tools,
            exit_deadline=deadline,
        )
        app.run()
    finally:
        deadline.set(EXIT_GRACE)
        store.close()
    return app.return_code or 0


def _terminal_restorer() -> Callable[[], None] | None:
    """What puts this terminal back as it is now; None if there is no terminal (or termios)."""
    stdin, stdout = sys.__stdin__, sys.__stdout__
    if stdin is None or stdout is None:
        return None
    with contextlib.suppress(ImportError, OSError, ValueError):
        import termios

        fd, out = stdin.fileno(), stdout.fileno()
        if not os.isatty(fd):
            return None
        attributes = termios.tcgetattr(fd)

        def restore() -> None:
            os.write(out, TERMINAL_RESET.encode())
            termios.tcsetattr(fd, termios.TCSANOW, attributes)

        return restore
    return None
