"""A conversation's own system prompt and model, in the session (no app).

Each turn sends the conversation's own system prompt when it has one, else
the config's; a change applies from the next turn on. Opening a conversation
that has a model of its own answers with it; one without keeps the model in
use; a model that cannot answer any more leaves the model in use and says
why, and the conversation keeps its own. A branch keeps both. The local
model's KV cache never answers a new system prompt from the old one's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatui.config import Config
from chatui.messages import Conversation, ModelRef, ModelResponse, ResponseState, UserPrompt
from chatui.providers.local.provider import LocalProvider
from chatui.providers.registry import ModelChoice, create_provider
from chatui.session import Session
from chatui.store import Store
from chatui.turn import QuietObserver, TurnOutcome
from tests.support import openai_wire as ow
from tests.support.local import ask, fresh_provider, local_config
from tests.support.remote import SECRET
from tests.support.wire import WireServer

CONFIG_PROMPT = "From the config."


@pytest.fixture
def gpt() -> Iterator[WireServer]:
    with WireServer(validate=ow.validate) as server:
        yield server


def openai_session(store: Store, server: WireServer, notices: list[str] | None = None) -> Session:
    """A session on the OpenAI provider at `server` ("wire-model"), made as chatui makes it."""
    config = Config(db_path=str(store.path), system_prompt=CONFIG_PROMPT, provider="openai")
    config.openai.base_url = f"{server.base_url}/v1"
    config.openai.model = "wire-model"
    notice = None if notices is None else notices.append
    return Session(config, store, create_provider(config), on_notice=notice)


async def run(session: Session, conversation: Conversation, prompt: str) -> TurnOutcome:
    turn = session.new_turn(conversation, prompt, observer=QuietObserver())
    outcome = await turn.run()
    session.turn_finished(turn, outcome)
    return outcome


def system_of(body: dict) -> str | None:  # type: ignore[type-arg]
    """The system prompt of a Chat Completions request, None if it sends none."""
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else None


def shared_prefix(one: list[int], other: list[int]) -> int:
    """How many tokens the two sequences share from their start."""
    length = min(len(one), len(other))
    return next((n for n in range(length) if one[n] != other[n]), length)


# The system prompt


async def test_a_turn_sends_the_conversations_own_system_prompt_else_the_configs(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    own, plain, silent = (store.create_conversation() for _ in range(3))
    for conversation, text in ((own, "Answer in French."), (silent, "")):
        store.set_system_prompt(conversation.id, text)
    gpt.play(*(ow.reply("ok") for _ in range(3)))

    for conversation in (own, plain, silent):
        loaded = store.load_conversation(conversation.id)  # As opening it gives it.
        assert (await run(session, loaded, "hi")).state is ResponseState.COMPLETE

    assert [system_of(r.body) for r in gpt.requests] == ["Answer in French.", CONFIG_PROMPT, None]


async def test_a_new_system_prompt_applies_from_the_next_turn_on(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    conversation = store.create_conversation()
    gpt.play(ow.reply("one"), ow.reply("two"), ow.reply("three"))
    running = session.new_turn(conversation, "first", observer=QuietObserver())

    session.set_system_prompt(conversation, "Be terse.")  # While that turn is under way.
    await running.run()
    await run(session, conversation, "second")
    session.set_system_prompt(conversation, None)  # "Use the default".
    await run(session, conversation, "third")

    assert [system_of(r.body) for r in gpt.requests] == [CONFIG_PROMPT, "Be terse.", CONFIG_PROMPT]
    assert store.load_conversation(conversation.id).system_prompt is None
    session.set_system_prompt(conversation, "Be terse.")
    assert store.load_conversation(conversation.id).system_prompt == "Be terse."


# The model


async def test_opening_a_conversation_answers_with_its_own_model(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    start = session.open_startup_conversation()
    other = store.create_conversation()
    store.set_model(other.id, ModelRef("openai", "other-model"))
    gpt.play(ow.reply("one"), ow.reply("two"))

    opened = await session.open_conversation(other.id, start)
    session.adopt_conversation_settings(opened)
    assert (session.choice.provider, session.choice.model) == ("openai", "other-model")
    await run(session, opened, "hi")

    back = await session.open_conversation(start.id, opened)
    session.adopt_conversation_settings(back)  # It has none of its own: the model stays.
    await run(session, back, "hello")
    assert [r.body["model"] for r in gpt.requests] == ["other-model", "other-model"]
    assert store.load_conversation(start.id).model is None


async def test_switching_keeps_the_model_with_the_conversation(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    conversation = session.open_startup_conversation()
    choice = ModelChoice("openai", "picked-model", "picked-model")

    session.switch(choice)
    session.keep_model(conversation)

    assert conversation.model == ModelRef("openai", "picked-model")
    assert store.load_conversation(conversation.id).model == ModelRef("openai", "picked-model")
    assert session.model_of(conversation) == choice  # As the switcher offers it: marked.


@pytest.mark.parametrize("gone", ["anthropic", "local"])
async def test_a_model_that_cannot_answer_any_more_leaves_the_one_in_use_and_says_why(
    store: Store, gpt: WireServer, tmp_path: Path, gone: str
) -> None:
    notices: list[str] = []
    session = openai_session(store, gpt, notices)
    model = "claude-gone" if gone == "anthropic" else str(tmp_path / "deleted.gguf")
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef(gone, model))
    before = session.provider

    opened = await session.open_conversation(conversation.id, session.open_startup_conversation())
    session.adopt_conversation_settings(opened)

    assert session.provider is before and session.choice.model == "wire-model"
    (notice,) = notices
    assert notice.startswith(f"This conversation's model ({gone} · ")
    assert "cannot answer now, so openai · wire-model answers instead" in notice
    assert ("ANTHROPIC_API_KEY" if gone == "anthropic" else "No model file at") in notice
    assert store.load_conversation(conversation.id).model == ModelRef(gone, model)  # Kept.
    gpt.play(ow.reply("still here"))
    assert (await run(session, opened, "hi")).state is ResponseState.COMPLETE


async def test_what_the_notice_says_of_a_model_never_shows_a_key_or_a_control_character(
    store: Store, gpt: WireServer
) -> None:
    notices: list[str] = []
    session = openai_session(store, gpt, notices)
    session.config.anthropic.api_key = ""
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef("anthropic", f"\x1b[2J{SECRET}"))
    session.config.openai.api_key = SECRET  # A key the session knows: never shown.

    session.adopt_conversation_settings(store.load_conversation(conversation.id))

    (notice,) = notices
    assert "\x1b" not in notice and "␛[2J" in notice
    assert SECRET[:8] not in notice and SECRET[-8:] not in notice


async def test_a_model_named_on_the_command_line_wins_and_becomes_the_conversations(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    conversation = store.create_conversation()
    store.set_model(conversation.id, ModelRef("openai", "stored-model"))

    session.adopt_conversation_settings(store.load_conversation(conversation.id), model_named=True)

    assert session.choice.model == "wire-model"
    assert store.load_conversation(conversation.id).model == ModelRef("openai", "wire-model")


async def test_a_branch_keeps_the_system_prompt_and_the_model(
    store: Store, gpt: WireServer
) -> None:
    session = openai_session(store, gpt)
    start = session.open_startup_conversation()
    store.set_system_prompt(start.id, "Speak like a pirate.")
    store.set_model(start.id, ModelRef("openai", "wire-model"))
    conversation = store.load_conversation(start.id)
    gpt.play(ow.reply("Arr."), ow.reply("Arr again."))
    await run(session, conversation, "hi")
    prompt = next(item for item in conversation.items if isinstance(item, UserPrompt))

    fork = await session.fork(conversation, prompt)
    stored = store.load_conversation(fork.id)

    assert (fork.system_prompt, fork.model) == (
        "Speak like a pirate.",
        ModelRef("openai", "wire-model"),
    )
    assert (stored.system_prompt, stored.model) == (fork.system_prompt, fork.model)
    await run(session, fork, "hello")
    assert system_of(gpt.requests[-1].body) == "Speak like a pirate."


# The local model's KV cache


async def test_the_local_cache_never_answers_a_new_system_prompt_from_the_old_one(
    store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    """The cache is keyed on the prompt's tokens: a new system prompt, early in the prompt,
    leaves only the tokens before it to reuse; the reply is the one a cold model gives."""
    config = Config(db_path=str(store.path), system_prompt="Alpha rules apply.")
    local = LocalProvider(local_config(tiny_model, max_tokens=6), state_dir=tmp_path / "kv")
    session = Session(config, store, local)
    await session.prepare()
    conversation = session.open_startup_conversation()
    await run(session, conversation, "Hello there")
    first = local.last_job
    assert first is not None
    cached = [*first.prompt_ids, *first.reply_tokens]

    session.set_system_prompt(conversation, "Beta rules apply instead.")
    await run(session, conversation, "And now?")
    second = local.last_job
    assert second is not None and second is not first

    shared = shared_prefix(cached, second.prompt_ids)
    assert shared < len(first.prompt_ids) // 2  # The system prompt comes early in the prompt...
    assert second.reused <= shared  # ...and nothing after it was taken from the cache.
    assert local.last_request is not None
    system = local.last_request.messages[0]
    assert (system.role, system.content) == ("system", "Beta rules apply instead.")
    reply = conversation.items[-1]
    assert isinstance(reply, ModelResponse)
    async with fresh_provider(tiny_model, max_tokens=6) as cold:
        reference = await ask(cold, local.last_request.messages)
    assert reply.text == reference.text  # What a model that never saw "Alpha" answers.

    await run(session, conversation, "Same prompt")  # Unchanged: the whole prefix is reused.
    third = local.last_job
    assert third is not None and third.reused >= second.prompt_tokens
    await session.close()
