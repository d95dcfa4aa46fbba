"""The `chatui` command: flags, config, store, provider, then the app.

A prompt (`-p PROMPT`, `-p -`, or piped in with no `-p`) is answered
without the app, by `chatui.headless`, which imports no Textual;
`--continue` and `--resume ID` name the conversation for both, and an
unknown one is refused before anything starts.

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
from chatui.gc_pause import freeze_imports, pause_for_startup, resume_after_startup
from chatui.typeahead import keys_typed_ahead, original_settings

if TYPE_CHECKING:  # The rest of chatui is imported in `main`, once the collector is paused.
    from chatui.config import Config
    from chatui.providers.base import Provider
    from chatui.store import Store
    from chatui.tools.protocol import ToolRunner

# What Textual turns on (the alternate screen, mouse reports, bracketed paste, focus
# events, the kitty keyboard protocol, a hidden cursor), turned off again.
TERMINAL_RESET = (
    "\x1b[<u\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?1016l\x1b[?2004l"
    "\x1b[?2048l\x1b[?1004l\x1b[?7h\x1b[?1049l\x1b[?25h"
)


HELP_EPILOG = """\
from the shell (no full-screen UI; the conversation is stored as in the app):
  chatui -p "a prompt"          print the reply as plain text
  cat notes.md | chatui -p -    the prompt from stdin (or pipe it in without -p)
  chatui -c -p "more"           go on with the last conversation (also: chatui -c)
  chatui --json -p "a prompt"   one JSON object per event (see the README)
  Ctrl+C or SIGTERM stops the reply as Esc does; a second Ctrl+C ends at once.

exit codes: 0 complete, 1 failed (or no provider), 2 nothing sent (a bad flag,
  an empty prompt, an unknown --resume id), 130 Ctrl+C, 141 stdout closed,
  143 SIGTERM (what arrived is stored, marked interrupted)

chatui export --help: a stored conversation as Markdown or JSON.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from chatui.config import PROVIDERS

    parser = argparse.ArgumentParser(
        prog="chatui",
        description="A terminal chat app for large language models whose stop key really stops.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    which.add_argument(
        "--resume", metavar="ID", help="go on with conversation ID (or the start of it)"
    )
    parser.add_argument("--version", action="version", version=f"chatui {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["export"]:
        from chatui.export_command import export_main

        return export_main(arguments[1:])
    # Off while chatui starts (see `pause_for_startup`): the app turns it back on after its
    # first frame, a headless run as it begins; here whatever way this ends.
    pause_for_startup()
    try:
        return _start(arguments)
    finally:
        resume_after_startup()


def _start(arguments: list[str]) -> int:
    """The flags, the config and the store, then a headless run or the app."""
    from chatui.config import ConfigError, load_config
    from chatui.store import Store, StoreError, default_db_path

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
        _tell(f"chatui: config error: {error}")
        return 2
    try:
        store = Store(
            Path(config.db_path).expanduser() if config.db_path else default_db_path(),
            on_long_work=lambda text: _tell(f"chatui: {text}"),
        )
    except StoreError as error:
        _tell(f"chatui: {error}")
        return 2
    resume: str | None = None
    if _needs_headless_module(args):  # The app alone does without it (a faster first frame).
        from chatui.headless import EXIT_USAGE, UsageError

        try:
            resume = _conversation_to_resume(store, args)
            if args.prompt is not None or _prompt_piped_in():
                return _run_headless(config, store, args, resume)
            if args.json or args.allowed_tools:
                flag = "--json" if args.json else "--allow-tool"
                raise UsageError(
                    f"{flag} goes with a headless run: give the prompt with -p PROMPT."
                )
        except UsageError as error:
            store.close()
            _tell(f"chatui: {error}")
            return EXIT_USAGE
    if no_terminal := terminal_problem():  # Said after the config's and the store's errors.
        # The full-screen UI would draw into a pipe or a file, and wait for keys forever.
        store.close()
        _tell(
            f"chatui needs a terminal: {no_terminal}. Run it in a terminal. To print a reply "
            "without one, give the prompt with -p PROMPT (or pipe it in)."
        )
        return 2

    # The provider is made after the first frame: its SDK or llama.cpp takes up to a second.
    named = args.provider is not None or args.model is not None
    with keys_typed_ahead():  # From now on, a prompt typed and sent while chatui starts is sent.
        return run_app(config, store, None, deferred=True, resume=resume, model_named=named)


def _tell(text: str) -> None:
    """`text` on stderr; nowhere if stderr is closed (print would send it to stdout)."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            print(text, file=sys.stderr, flush=True)


def _needs_headless_module(args: argparse.Namespace) -> bool:
    """Whether the flags (or a prompt piped in) ask for `chatui.headless`: a run, or a resume."""
    return (
        args.prompt is not None
        or args.json
        or bool(args.allowed_tools)
        or args.resume is not None
        or args.resume_last
        or _prompt_piped_in()
    )


def _conversation_to_resume(store: Store, args: argparse.Namespace) -> str | None:
    """The conversation `--continue` or `--resume` names, now owned by this chatui; or None.

    Raises UsageError for an unknown id, or one open in another chatui.
    """
    from chatui.headless import UsageError, find_conversation
    from chatui.session import OPEN_ELSEWHERE

    found = find_conversation(store, resume=args.resume, last=args.resume_last)
    if found is not None and not store.claim_conversation(found):
        raise UsageError(OPEN_ELSEWHERE)
    return found


def _prompt_piped_in() -> bool:
    """Whether stdin is a pipe, a file or a socket: a prompt to answer without the UI."""
    return _not_a_terminal(sys.__stdin__) in ("a pipe", "a file", "a socket")


def _run_headless(
    config: Config, store: Store, args: argparse.Namespace, resume: str | None
) -> int:
    """`chatui -p`, `chatui -p -`, or a prompt piped in: the reply on stdout (chatui.headless)."""
    from chatui.headless import EXIT_SIGINT, read_prompt, run_headless

    resume_after_startup()  # The run may be long: the collector is on while it runs.
    try:
        prompt = read_prompt(args.prompt)
    except KeyboardInterrupt:  # Ctrl+C while the prompt was being read: nothing was sent.
        store.close()
        return EXIT_SIGINT
    return run_headless(
        config,
        store,
        prompt=prompt,
        conversation_id=resume,
        json_events=args.json,
        allowed_tools=args.allowed_tools,
        model_named=args.provider is not None or args.model is not None,
    )


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
    deferred: bool = False,
    resume: str | None = None,
    model_named: bool = False,
) -> int:
    """Run chatui's app on this terminal until it quits; the process ends soon after.

    `resume`: the id of a stored conversation (owned by `store`) to open first.
    `deferred`: with no `provider`, the configured one is made after the first
    frame (see `Session`). `model_named`: the command line named the model.

    Closes `store`. Past the app's exit, the process has `EXIT_GRACE` seconds
    to end (a thread that never returns may hold up the interpreter's exit);
    past that, or past a quit's deadline, it ends itself with status 1.
    """
    pause_for_startup()  # Until the first frame (the app turns the collector back on).
    from chatui.app import EXIT_GRACE, ChatApp, kill_mcp_servers  # Textual is slow to import.
    from chatui.threads import ExitDeadline

    freeze_imports()

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
            deferred=deferred,
            resume=resume,
            model_named=model_named,
        )
        app.run()
    finally:
        resume_after_startup()  # If the app never drew its first frame.
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
        attributes = original_settings() or termios.tcgetattr(fd)  # As before chatui ran.

        def restore() -> None:
            os.write(out, TERMINAL_RESET.encode())
            termios.tcsetattr(fd, termios.TCSANOW, attributes)

        return restore
    return None
