"""`chatui export ID|--last`: a stored conversation as Markdown or JSON, to stdout or a file.

It reads the store the app uses (`--db`, `CHATUI_DB`, the config's
`db_path`, in that order) and imports no UI. ID may be the start of an id,
if only one conversation's id starts so. Errors are one sentence on stderr:
exit 2 when there is nothing to export (no store, no such conversation, a
store chatui cannot read), 1 when the output could not be written. Piped
into a reader that stops early (`| head`), it ends quietly with 141, as a
program killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
import sys
import tempfile
from pathlib import Path

from chatui.config import ConfigError, load_config
from chatui.export import to_json, to_markdown
from chatui.sanitize import one_line
from chatui.store import Store, StoreError, default_db_path

BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away.
SHOWN_MATCHES = 5  # Of the conversations an ambiguous id starts, this many are named.


class ExportError(Exception):
    """Why nothing was exported: a sentence for the user, and the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chatui export",
        description="Write a stored conversation as Markdown (to read) or JSON (as stored).",
    )
    parser.add_argument("id", nargs="?", metavar="ID", help="the conversation (or its id's start)")
    parser.add_argument("--last", action="store_true", help="the most recent conversation")
    parser.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="markdown (the default) to read it; json: as stored, every version",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    parser.add_argument("--db", type=Path, help="conversation database (env: CHATUI_DB)")
    parser.add_argument("--config", type=Path, help="config file (default: user config dir)")
    args = parser.parse_args(argv)
    if (args.id is None) == (not args.last):
        parser.error("give a conversation's ID or --last (one of them)")
    return args


def export_main(argv: list[str]) -> int:
    """Run `chatui export ARGV`; the exit code."""
    args = parse_args(argv)
    try:
        text = _export(args)
        if args.output is None or str(args.output) == "-":
            return _to_stdout(text)
        _to_file(args.output, text)
    except ExportError as error:
        if sys.stderr is not None:  # Closed (`2>&-`), print would write to stdout.
            print(f"chatui export: {error}", file=sys.stderr)
        return error.code
    return 0


def _export(args: argparse.Namespace) -> str:
    try:
        config = load_config(args.config, overrides={"db_path": str(args.db) if args.db else None})
    except ConfigError as error:
        raise ExportError(f"config error: {error}") from None
    path = Path(config.db_path).expanduser() if config.db_path else default_db_path()
    if not path.exists():  # Opening it would make an empty store.
        raise ExportError(f"there is no conversation store at {one_line(str(path), 500)}.")
    try:
        store = Store(path)
    except StoreError as error:
        raise ExportError(str(error)) from None
    try:
        conversation_id = _find(store, args.id)
        try:
            conversation = store.load_conversation(conversation_id)
        except KeyError:
            if store.exists(conversation_id):
                raise  # A damaged item, below.
            raise ExportError("that conversation was deleted meanwhile.") from None
        return to_json(conversation) if args.format == "json" else to_markdown(conversation)
    except sqlite3.Error as error:
        raise ExportError(f"the conversation store could not be read ({error}).") from None
    except (KeyError, TypeError, ValueError):  # An item's JSON that chatui did not write.
        raise ExportError(
            "that conversation could not be read: the store holds damaged data for it."
        ) from None
    finally:
        store.close()


def _find(store: Store, wanted: str | None) -> str:
    """The id of the conversation `wanted` names (None: the latest); else an `ExportError`."""
    if wanted is None:
        latest = store.latest_conversation_id()
        if latest is None:
            raise ExportError("no conversation is stored yet.")
        return latest
    if wanted and store.exists(wanted):
        return wanted
    matches = store.conversations_starting_with(wanted) if wanted else []
    shown = one_line(wanted, 100)
    if not matches:
        raise ExportError(f"no conversation's id is or starts with {shown!r}.")
    if len(matches) > 1:
        named = "; ".join(f"{id} ({one_line(title, 60)})" for id, title in matches[:SHOWN_MATCHES])
        more = f"; and {len(matches) - SHOWN_MATCHES} more" if len(matches) > SHOWN_MATCHES else ""
        raise ExportError(
            f"{len(matches)} conversations' ids start with {shown!r}: {named}{more}. "
            "Give more of the id."
        )
    return str(matches[0][0])


def _to_stdout(text: str) -> int:
    data = text.encode("utf-8", "backslashreplace")  # A lone surrogate, shown as its code.
    try:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
    except BrokenPipeError:
        # The reader is gone; Python's own flush at exit would complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    return 0


def _to_file(path: Path, text: str) -> None:
    """Write `text` to `path`, all or nothing: a file it replaces stays whole if writing fails.

    A link is followed: the file it points to is replaced, the link kept. A
    path that is not a file (`/dev/stdout`, `/dev/null`, a fifo) is written
    into as a shell's `>` would: replacing it would put a file in its place.
    """
    shown = one_line(str(path), 500)
    data = text.encode("utf-8", "backslashreplace")
    temporary: str | None = None
    try:
        if _is_special(path):
            with path.open("wb") as file:
                file.write(data)
            return
        target = Path(os.path.realpath(path))
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        if hasattr(os, "fchmod"):  # mkstemp's file is private; an export is not.
            os.fchmod(descriptor, _mode_for(target))
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        reason = error.strerror or type(error).__name__
        raise ExportError(f"could not write {shown}: {reason}.", code=1) from None


def _is_special(path: Path) -> bool:
    """Whether `path` (followed, if a link) is there and neither a file nor a directory."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _mode_for(path: Path) -> int:
    """The permissions of the file `path` names, or those of a new file (the umask's)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask
