"""The palette's "Export the conversation": the open conversation as a new Markdown file.

The file goes to `exports/` beside the conversation store (on Linux
`~/.local/share/chatui/exports/`), named after the title and the id's start
(`plan-a-trip-1a2b3c4d.md`), and never over another file (a second export
is `…-2.md`). That folder is where chatui already writes, so it exists or can
be made wherever the store can, and it follows `--db`: a store of its own
keeps its exports beside it. chatui never makes folders in the user's home
they did not ask for (a `~/Documents` on a server), nor writes into the
directory it runs in, which is the tools' workspace. The notification gives
the file's full path; `chatui export` writes anywhere else.

The Markdown is made on the event loop, where the conversation changes, a
slice at a time so that keys (Esc) are still read at once in a long
conversation; the file is written on a thread. A write that fails (a full
disk, a folder that cannot be made) leaves no partial file and says why;
the conversation is untouched in the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from textual.app import SystemCommand

from chatui.export import file_stem, markdown_blocks, markdown_document, write_new_file
from chatui.messages import Conversation
from chatui.sanitize import visible

if TYPE_CHECKING:
    from chatui.screens.chat import ChatScreen

EXPORTS = "exports"
TITLE = "Export the conversation"
NOTICE_SECONDS = 20  # Long enough to read, or copy, a path.
SLICE = 0.005  # Seconds of making Markdown between two looks at the event loop.


def export_commands(screen: ChatScreen) -> Iterator[SystemCommand]:
    """The palette's entry, offered while the conversation has something to export."""
    if screen.conversation.items:
        yield SystemCommand(
            TITLE,
            "Write it to a Markdown file, and show where",
            partial(export_conversation, screen),
        )


def exports_dir(store_path: Path) -> Path:
    """Where exports go: `exports/` beside the store (the user data dir's, for one in memory)."""
    if str(store_path) == ":memory:":
        return Path(platformdirs.user_data_dir("chatui", appauthor=False)) / EXPORTS
    return store_path.expanduser().absolute().parent / EXPORTS


async def export_conversation(screen: ChatScreen) -> Path | None:
    """Write the open conversation's shown path as Markdown to a new file; say where, or why not."""
    conversation = screen.conversation
    text = await _markdown(conversation)
    directory = exports_dir(screen.session.store.path)
    try:
        path = await asyncio.to_thread(
            write_new_file, directory, file_stem(conversation), ".md", text
        )
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        screen.notify(
            f"The conversation could not be exported to {visible(str(directory))}: {reason}. "
            "No file was written and the conversation is still stored: free some space or "
            "make the folder writable, then export again.",
            severity="error",
            markup=False,
            timeout=NOTICE_SECONDS,
        )
        return None
    screen.notify(
        f"Exported the conversation to {visible(str(path))}",
        markup=False,
        timeout=NOTICE_SECONDS,
    )
    return path


async def _markdown(conversation: Conversation) -> str:
    """The conversation's Markdown, made in slices with the event loop running between them."""
    blocks: list[str] = []
    pause_at = time.perf_counter() + SLICE
    for block in markdown_blocks(conversation):
        blocks.append(block)
        if time.perf_counter() >= pause_at:
            await asyncio.sleep(0)
            pause_at = time.perf_counter() + SLICE
    return markdown_document(blocks)
