"""`chatui export` as a shell user meets it: `-o` onto links and special files, long conversations.

The command runs in-process (`export_main`) on a real store in the test's
directory, with an empty config file.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from chatui.export import to_json, to_markdown
from chatui.export_command import export_main
from chatui.messages import ModelResponse, ResponseState, TextPart, UserPrompt
from chatui.store import READ_AT_OPEN, Store

BOUND = 60.0  # Seconds: a bound on a hang, not pacing.


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store whose latest conversation has more items than are read when it is opened."""
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation = store.create_conversation("A long talk")
    for n in range(READ_AT_OPEN):
        store.save_item(conversation.id, UserPrompt(f"Question {n}?"))
        response = ModelResponse("local", "gemma", [TextPart(f"Answer {n}.")])
        response.state = ResponseState.COMPLETE
        store.save_item(conversation.id, response)
    store.close()
    return path


def export(db: Path, tmp_path: Path, *args: str) -> int:
    config = tmp_path / "config.toml"
    config.touch()
    return export_main(["--last", "--db", str(db), "--config", str(config), *args])


def expected(db: Path, *, json: bool = False) -> str:
    """The export of the latest conversation, every item read at open."""
    store = Store(db)
    try:
        latest = store.latest_conversation_id()
        assert latest is not None
        conversation = store.load_conversation(latest, read=10**6)
        return to_json(conversation) if json else to_markdown(conversation)
    finally:
        store.close()


def test_a_long_conversation_exports_every_item_though_most_are_read_on_first_use(
    db: Path, tmp_path: Path
) -> None:
    markdown, document = tmp_path / "out.md", tmp_path / "out.json"

    assert export(db, tmp_path, "-o", str(markdown)) == 0
    assert export(db, tmp_path, "--format", "json", "-o", str(document)) == 0

    assert markdown.read_text() == expected(db)
    assert "Question 0?" in markdown.read_text() and "Answer 39." in markdown.read_text()
    assert document.read_text() == expected(db, json=True)


def test_export_to_a_symlink_writes_the_file_it_points_to_and_keeps_the_link(
    db: Path, tmp_path: Path
) -> None:
    target = tmp_path / "notes" / "talk.md"
    target.parent.mkdir()
    target.write_text("an older export")
    link = tmp_path / "talk.md"
    link.symlink_to(target)

    assert export(db, tmp_path, "-o", str(link)) == 0

    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == expected(db)
    assert [p.name for p in target.parent.iterdir()] == ["talk.md"]  # No temporary left.


def test_export_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(db: Path, tmp_path: Path) -> None:
    """As `-o /dev/stdout` or `-o /dev/null` (which root must never replace by a file)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # Both ends held open by the test: the export's open never waits, and the reading
    # ends once the test lets go of its end, whether the export wrote into the fifo or not.
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    held = os.open(fifo, os.O_WRONLY)
    os.set_blocking(reader_fd, True)
    received = bytearray()

    def read() -> None:
        with os.fdopen(reader_fd, "rb") as reader:
            while data := reader.read(65536):
                received.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = export(db, tmp_path, "-o", str(fifo))
    finally:
        os.close(held)
        reader.join(BOUND)

    assert code == 0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received.decode() == expected(db)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pipe")] == []
