"""Each running chatui instance owns the conversations it writes into."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatui.messages import UserPrompt
from chatui.store import Store

ROOT = Path(__file__).parent.parent

# A chatui stand-in: opens the store, waits for "go", takes its startup conversation,
# prints its id and keeps running (and owning it) until its stdin closes.
RACER = """
import sys
from chatui.store import Store

store = Store(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
print(store.open_startup_conversation().id, flush=True)
sys.stdin.read()
store.close()
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chat.sqlite3"


@pytest.fixture
def other(db: Path) -> Iterator[Store]:
    """A second chatui instance running on the same database."""
    store = Store(db)
    yield store
    store.close()


@pytest.fixture
def ours(db: Path, other: Store) -> Iterator[Store]:
    store = Store(db)
    yield store
    store.close()


def test_two_instances_get_their_own_startup_conversation(other: Store, ours: Store) -> None:
    theirs = other.open_startup_conversation()
    mine = ours.open_startup_conversation()

    assert mine.id != theirs.id
    assert len(ours.list_conversations()) == 2


def test_two_instances_do_not_share_a_left_over_empty_conversation(db: Path) -> None:
    left_over = Store(db)
    empty = left_over.create_conversation()
    left_over.close()
    first, second = Store(db), Store(db)

    firsts = first.open_startup_conversation()
    seconds = second.open_startup_conversation()

    assert firsts.id == empty.id  # Reused: its owner has quit.
    assert seconds.id != empty.id
    first.close()
    second.close()


def test_startup_skips_a_conversation_that_has_items(ours: Store) -> None:
    used = ours.create_conversation()
    ours.save_item(used.id, UserPrompt("hi"))
    ours.release_conversation(used.id)

    assert ours.open_startup_conversation().id != used.id


def test_claim_fails_while_a_live_other_instance_owns_the_conversation(
    other: Store, ours: Store
) -> None:
    theirs = other.create_conversation()

    assert not ours.claim_conversation(theirs.id)
    assert ours.owned_by_other(theirs.id)
    assert other.claim_conversation(theirs.id)  # Claiming what we own already succeeds.
    assert not other.owned_by_other(theirs.id)


def test_claim_succeeds_once_the_owner_closes(other: Store, ours: Store) -> None:
    theirs = other.create_conversation()
    other.close()

    assert not ours.owned_by_other(theirs.id)
    assert ours.claim_conversation(theirs.id)
    third = Store(ours.path)
    assert not third.claim_conversation(theirs.id)  # Now it is ours.
    third.close()


def test_claim_succeeds_once_the_owner_dies(other: Store, ours: Store) -> None:
    theirs = other.create_conversation()
    os.close(other._lock)  # A crash: the lock goes, the rows and lock file stay.
    other._lock = None

    assert ours.claim_conversation(theirs.id)


def test_release_gives_up_only_our_own_claim(other: Store, ours: Store) -> None:
    theirs = other.create_conversation()
    mine = ours.create_conversation()

    ours.release_conversation(theirs.id)  # Not ours: no effect.
    ours.release_conversation(mine.id)

    assert not ours.claim_conversation(theirs.id)
    assert other.claim_conversation(mine.id)


def test_claiming_a_missing_conversation_fails(ours: Store) -> None:
    assert not ours.claim_conversation("no such conversation")


def test_two_processes_racing_for_startup_get_different_conversations(db: Path) -> None:
    left_over = Store(db)
    left_over.create_conversation()  # An empty conversation that both want.
    left_over.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:
            assert racer.stdout.readline() == "ready\n"
        for racer in racers:  # Both go at once.
            racer.stdin.write("go\n")
            racer.stdin.flush()
        ids = [racer.stdout.readline().strip() for racer in racers]
    finally:
        for racer in racers:
            racer.stdin.close()
            racer.wait(timeout=30)

    assert all(ids) and ids[0] != ids[1]
    assert [racer.returncode for racer in racers] == [0, 0]
