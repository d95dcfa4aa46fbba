"""Reading files and listing directories inside one workspace root, and nowhere else.

A path from the model is taken relative to the root (an absolute one must
lie inside it). It is resolved, symlinks included, before anything is
opened: `..` that climbs out, or a symlink that leads out, is refused.
Only a regular file is opened: opening a named pipe that nobody writes
blocks for ever (and a device may never end), so the kind of file is checked
before the open, and again on what was opened (O_NONBLOCK: a pipe swapped in
meanwhile cannot block the open either). A binary file (a NUL byte, or bytes
that are not UTF-8, in its first 8 KiB) is not read. Each refusal is a
`ToolFailed` whose message is the result.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from chatui import redact
from chatui.tools.registry import ToolFailed

SNIFF_BYTES = 8192
MAX_FILE_CHARS = 50_000
MAX_ENTRIES = 500


class Workspace:
    """The directory the file tools are confined to."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, path: str) -> Path:
        """`path` (relative to the root) as a real path inside the root, or ToolFailed."""
        if "\0" in path:
            raise ToolFailed("Refused: the path holds a NUL character.")
        if not self.root.is_dir():
            raise ToolFailed(f"The workspace {self.root} is not a directory (tools.workspace).")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            real = candidate.resolve(strict=True)
        except FileNotFoundError:
            raise ToolFailed(f"{path!r} does not exist in the workspace.") from None
        except (OSError, RuntimeError) as error:  # A symlink loop, a permission.
            raise ToolFailed(f"{path!r} cannot be resolved: {error}") from None
        if not real.is_relative_to(self.root):
            how = "a symlink that leads" if _through_symlink(candidate, self.root) else "a path"
            raise ToolFailed(
                f"Refused: {path!r} is {how} outside the workspace ({self.root}). "
                "Only files inside it can be read."
            )
        return real

    def shown(self, real: Path) -> str:
        """`real` as the model should name it: relative to the root."""
        relative = real.relative_to(self.root)
        return "." if relative == Path() else relative.as_posix()


def _through_symlink(candidate: Path, root: Path) -> bool:
    """Whether some part of `candidate` is a symlink (not simply `..` out of the root)."""
    current = Path(candidate.anchor)
    for part in candidate.parts[1:]:
        current = current / part
        if current.is_symlink():
            return True
    return False


def read_text_file(workspace: Workspace, path: str, max_chars: int = MAX_FILE_CHARS) -> str:
    """The text of a file inside `workspace`, cut at `max_chars` with a note saying so."""
    real = workspace.resolve(path)
    shown = workspace.shown(real)
    try:
        _refuse_unless_regular(os.stat(real).st_mode, shown)
        with _open_regular(real, shown) as file:
            head = file.read(SNIFF_BYTES)
            if _binary(head):
                raise ToolFailed(f"{shown!r} is a binary file; only text files are read.")
            # UTF-8: at most 4 bytes a character; and past the cut, room for a whole key.
            data = head + file.read((max_chars + redact.margin()) * 4)
    except OSError as error:
        raise ToolFailed(f"{shown!r} cannot be read: {error.strerror or error}") from None
    text, cut = redact.clip(data.decode("utf-8", errors="replace"), max_chars)
    size = real.stat().st_size
    if cut or len(data) < size:
        text += f"\n[… cut: the file has {size:,} bytes; the first {max_chars:,} characters shown]"
    return text


def _refuse_unless_regular(mode: int, shown: str) -> None:
    """ToolFailed unless `mode` is a regular file's: a pipe's open or read may never end."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ToolFailed(f"{shown!r} is a directory: list it instead.")
    kinds = {
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    raise ToolFailed(f"{shown!r} is {kind}, not a regular file: only files are read.")


def _open_regular(real: Path, shown: str) -> BinaryIO:
    """`real` opened for reading, if it is still a regular file once open (without blocking)."""
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        _refuse_unless_regular(os.fstat(fd).st_mode, shown)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _binary(head: bytes) -> bool:
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start < len(head) - 3  # Not just a character cut at the sniff's end.
    return False


def list_directory(workspace: Workspace, path: str = ".", max_entries: int = MAX_ENTRIES) -> str:
    """A directory's entries inside `workspace`, one a line: directories end in "/"."""
    real = workspace.resolve(path)
    shown = workspace.shown(real)
    if not real.is_dir():
        raise ToolFailed(f"{shown!r} is not a directory.")
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError as error:
        raise ToolFailed(f"{shown!r} cannot be listed: {error.strerror or error}") from None
    lines = []
    for entry in entries[:max_entries]:
        if entry.is_symlink():
            lines.append(f"{entry.name} -> {os.readlink(entry.path)}")
        elif entry.is_dir():
            lines.append(f"{entry.name}/")
        else:
            try:
                size = entry.stat().st_size
            except OSError:
                lines.append(entry.name)
            else:
                lines.append(f"{entry.name}  ({size:,} bytes)")
    if len(entries) > max_entries:
        lines.append(f"[… {len(entries) - max_entries:,} more entries not shown]")
    header = f"{shown}/ ({len(entries)} entries)" if entries else f"{shown}/ is empty"
    return "\n".join([header, *lines])
