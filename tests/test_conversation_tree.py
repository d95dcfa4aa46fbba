"""Versions as a tree: retry and edit make siblings, `items` is the path shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatui.messages import (
    Conversation,
    ModelResponse,
    ResponseState,
    TextPart,
    UserPrompt,
)
from chatui.store import Store
from chatui.turn_kinds import exchange_versions, shown_version


def reply(text: str, state: ResponseState = ResponseState.COMPLETE) -> ModelResponse:
    return ModelResponse("p", "m", parts=[TextPart(text)], state=state)


def texts(conversation: Conversation) -> list[str]:
    return [item.text for item in conversation.items]  # type: ignore[union-attr]


def test_a_retried_reply_is_a_version_beside_the_old_one() -> None:
    prompt, first = UserPrompt("hi"), reply("hello", ResponseState.INTERRUPTED)
    conversation = Conversation(items=[prompt, first])
    shown = conversation.items  # The screen and the turn hold this list.

    conversation.rewind_to(prompt.id)
    second = reply("hello again")
    conversation.items.append(second)

    assert shown is conversation.items and texts(conversation) == ["hi", "hello again"]
    assert conversation.parent_of(second.id) == prompt.id
    assert conversation.versions(second) == [first, second]
    assert conversation.version_of(second) == (2, 2)
    assert conversation.version_of(first) == (1, 2)
    assert conversation.versions(prompt) == [prompt]


def test_an_edited_last_prompt_is_a_version_of_the_old_prompt() -> None:
    p1, r1, p2, r2 = UserPrompt("a"), reply("A"), UserPrompt("b"), reply("B")
    conversation = Conversation(items=[p1, r1, p2, r2])

    conversation.rewind_to(conversation.parent_of(p2.id))
    edited, answer = UserPrompt("b, better"), reply("B'")
    conversation.items += [edited, answer]

    assert texts(conversation) == ["a", "A", "b, better", "B'"]
    assert conversation.versions(edited) == [p2, edited]
    assert conversation.versions(answer) == [answer]  # Its own reply has no other version.
    conversation.select(p2.id)
    assert texts(conversation) == ["a", "A", "b", "B"]
    conversation.select(edited.id)
    assert texts(conversation) == ["a", "A", "b, better", "B'"]


def test_selecting_a_version_shows_the_path_down_to_its_latest_item() -> None:
    prompt, first = UserPrompt("q"), reply("one")
    conversation = Conversation(items=[prompt, first])
    conversation.items += [UserPrompt("on one"), reply("old")]
    conversation.rewind_to(first.id)  # A second follow-up below the first reply.
    conversation.items += [UserPrompt("on one, again"), reply("newest below one")]
    conversation.rewind_to(prompt.id)
    second = reply("two")
    conversation.items.append(second)

    conversation.select(first.id)

    assert texts(conversation) == ["q", "one", "on one, again", "newest below one"]
    conversation.select(second.id)
    assert texts(conversation) == ["q", "two"]
    with pytest.raises(KeyError):
        conversation.select("no such item")


def test_rewinding_keeps_every_item_and_the_next_one_is_a_new_version() -> None:
    prompt, answer = UserPrompt("first"), reply("answer")
    conversation = Conversation(items=[prompt, answer])

    conversation.rewind_to(None)

    assert conversation.items == [] and conversation.leaf is None
    assert conversation.all_items() == [prompt, answer]
    edited = UserPrompt("first, edited")
    conversation.items.append(edited)
    assert conversation.parent_of(edited.id) is None
    assert conversation.versions(edited) == [prompt, edited]
    conversation.select(prompt.id)
    assert conversation.items == [prompt, answer]


def test_an_item_taken_back_from_the_path_is_forgotten_but_a_rewound_one_is_kept() -> None:
    prompt, answer = UserPrompt("a"), reply("A")
    conversation = Conversation(items=[prompt, answer])
    refused = UserPrompt("too long")
    conversation.items.append(refused)
    assert conversation.parent_of(refused.id) == answer.id

    conversation.items.remove(refused)  # A prompt never kept, as the turn takes it back.

    assert conversation.all_items() == [prompt, answer]
    with pytest.raises(KeyError):
        conversation.parent_of(refused.id)
    conversation.rewind_to(prompt.id)
    conversation.items.append(retried := reply("A, again"))
    assert conversation.versions(retried) == [answer, retried]


# The same versions through the store, across restarts.


def test_retried_and_edited_versions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation = store.create_conversation()
    prompt, first = UserPrompt("hi"), reply("cut", ResponseState.INTERRUPTED)
    for item in (prompt, first):
        conversation.items.append(item)
        store.save_item(conversation.id, item)
    conversation.rewind_to(prompt.id)  # Retry.
    second = reply("whole")
    conversation.items.append(second)
    store.save_item(conversation.id, second, parent=conversation.parent_of(second.id))
    store.close()

    store = Store(path)
    loaded = store.load_conversation(conversation.id)
    assert texts(loaded) == ["hi", "whole"]
    assert [v.id for v in loaded.versions(loaded.items[1])] == [first.id, second.id]
    loaded.rewind_to(loaded.parent_of(prompt.id))  # Edit the prompt.
    edited = UserPrompt("hi there")
    loaded.items.append(edited)
    store.save_item(loaded.id, edited, parent=loaded.parent_of(edited.id))
    store.close()

    store = Store(path)
    reloaded = store.load_conversation(conversation.id)
    store.close()
    assert texts(reloaded) == ["hi there"]
    assert [v.text for v in reloaded.versions(reloaded.items[0])] == ["hi", "hi there"]
    reloaded.select(prompt.id)
    assert texts(reloaded) == ["hi", "whole"]  # Its latest reply.


def test_the_version_selected_is_the_one_shown_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite3"
    store = Store(path)
    conversation = store.create_conversation()
    prompt, first, second = UserPrompt("q"), reply("first"), reply("second")
    store.save_item(conversation.id, prompt)
    store.save_item(conversation.id, first)
    store.save_item(conversation.id, second, parent=prompt.id)
    conversation = store.load_conversation(conversation.id)
    assert texts(conversation) == ["q", "second"]

    conversation.select(first.id)
    store.set_leaf(conversation.id, conversation.leaf)
    store.close()

    store = Store(path)
    loaded = store.load_conversation(conversation.id)
    assert texts(loaded) == ["q", "first"]
    assert loaded.version_of(loaded.items[1]) == (1, 2)
    with pytest.raises(KeyError):
        store.set_leaf(conversation.id, "an item of no conversation")
    store.close()


def test_a_version_rewritten_in_place_keeps_its_parent_place_and_the_path(store: Store) -> None:
    conversation = store.create_conversation()
    prompt, first, second = UserPrompt("q"), reply("fir", ResponseState.INTERRUPTED), reply("2")
    for item in (prompt, first):
        store.save_item(conversation.id, item)
    store.save_item(conversation.id, second, parent=prompt.id)
    rows = store._db.execute("SELECT id, parent, seq FROM items ORDER BY seq").fetchall()

    first.append_text("st, continued")
    store.save_item(conversation.id, first, parent=None)  # In place: the parent is ignored.

    assert store._db.execute("SELECT id, parent, seq FROM items ORDER BY seq").fetchall() == rows
    loaded = store.load_conversation(conversation.id)
    assert texts(loaded) == ["q", "2"]
    assert [v.text for v in loaded.versions(loaded.items[1])] == ["first, continued", "2"]


def test_a_parent_from_elsewhere_is_refused_and_nothing_is_stored(store: Store) -> None:
    mine, other = store.create_conversation(), store.create_conversation()
    elsewhere = UserPrompt("elsewhere")
    store.save_item(other.id, elsewhere)

    with pytest.raises(KeyError):
        store.save_item(mine.id, reply("lost"), parent=elsewhere.id)

    assert store.load_conversation(mine.id).all_items() == []


def test_a_taken_back_prompt_leaves_the_path_on_the_version_shown(store: Store) -> None:
    conversation = store.create_conversation()
    prompt, first, retried = UserPrompt("q"), reply("one"), reply("two")
    store.save_item(conversation.id, prompt)
    store.save_item(conversation.id, first)
    store.save_item(conversation.id, retried, parent=prompt.id)
    refused, empty = UserPrompt("refused"), reply("", ResponseState.FAILED)
    store.save_item(conversation.id, refused)  # After "two", the end of the path.
    store.save_item(conversation.id, empty)

    store.delete_item(refused.id)  # As the turn takes back a prompt nothing answered.
    store.delete_item(empty.id)

    assert texts(store.load_conversation(conversation.id)) == ["q", "two"]
    store.save_item(conversation.id, after := UserPrompt("next"))
    loaded = store.load_conversation(conversation.id)
    assert texts(loaded) == ["q", "two", "next"]
    assert loaded.parent_of(after.id) == retried.id


def test_the_versions_of_an_exchange_are_found_without_a_pass_per_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The screen labels each exchange after every turn: in a long conversation a pass
    over the whole path per item made that quadratic (a second per label at 5,000 items)."""
    conversation = Conversation()
    for number in range(300):
        conversation.items += [UserPrompt(f"q{number}"), reply(f"a{number}")]
    prompt = conversation.items[-2]
    assert isinstance(prompt, UserPrompt)
    conversation.rewind_to(prompt.id)
    conversation.items.append(reply("again"))
    passes = 0
    catch_up = Conversation._catch_up

    def counted(self: Conversation) -> None:
        nonlocal passes
        passes += 1
        catch_up(self)

    monkeypatch.setattr(Conversation, "_catch_up", counted)

    versions = exchange_versions(conversation, prompt)

    assert [item.text for item in versions] == ["a299", "again"]  # type: ignore[union-attr]
    assert shown_version(conversation, prompt) == (2, 2)
    assert passes <= 10
