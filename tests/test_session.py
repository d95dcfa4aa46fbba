"""The session without a UI: conversations, titles, turns and the provider's lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from chatui.config import Config
from chatui.messages import ModelResponse, ResponseState, ToolCallPart, ToolResult, UserPrompt
from chatui.providers.base import ModelRequest, ProviderError, StreamEnd, StreamEvent, ToolSpec
from chatui.session import (
    GONE,
    OPEN_ELSEWHERE,
    TITLE_LENGTH,
    ConversationRefused,
    NoProvider,
    Session,
    StorageFailed,
)
from chatui.store import Store
from chatui.tools.protocol import Approval, Approver, ToolReport
from chatui.turn import QuietObserver, Turn, TurnOutcome
from tests.support.scripted import RAISE, ScriptedProvider, tool_call, words
from tests.support.turns import Sink

QUIET = QuietObserver()  # Shows nothing; nothing that needs approval runs.


@pytest.fixture
def other(store: Store) -> Store:
    """A second chatui on the same database."""
    second = Store(store.path)
    yield second
    second.close()


def make_session(store: Store, provider=None, **kw) -> Session:
    provider = ScriptedProvider() if provider is None else provider
    return Session(
        Config(system_prompt="Be brief.", db_path=str(store.path)), store, provider, **kw
    )


async def run_turn(session: Session, conversation, prompt: str) -> tuple[Turn, TurnOutcome]:
    turn = session.new_turn(conversation, prompt, observer=QUIET)
    outcome = await turn.run()
    session.turn_finished(turn, outcome)
    return turn, outcome


# The tools


async def test_the_tools_are_made_once_when_first_asked_for_and_prepare_asks(
    store: Store,
) -> None:
    made: list[object] = []

    def make_tools():  # type: ignore[no-untyped-def]
        made.append(object())
        return made[-1]

    session = make_session(store, make_tools=make_tools)
    assert made == []  # Not at start: the first frame does without them.
    await session.prepare()  # Just after the first frame.
    assert len(made) == 1 and session.tools is made[0]
    assert session.tools is made[0] and len(made) == 1  # Once.
    session.tools = None  # A test's own tools replace them.
    assert session.tools is None and len(made) == 1


# Opening and creating conversations


async def test_a_new_conversation_reuses_the_empty_open_one(store: Store) -> None:
    provider = ScriptedProvider()
    session = make_session(store, provider)
    current = session.open_startup_conversation()

    opened = await session.open_conversation(None, current)

    assert opened is current
    assert provider.lifecycle == ["conversation_left"]


async def test_a_new_conversation_leaves_a_used_one_for_others(store: Store, other: Store) -> None:
    session = make_session(store)
    current = session.open_startup_conversation()
    await run_turn(session, current, "hello")

    opened = await session.open_conversation(None, current)

    assert opened.id != current.id and opened.items == []
    assert other.claim_conversation(current.id)  # Released: another chatui may take it.
    assert not other.claim_conversation(opened.id)


async def test_opening_a_stored_conversation_loads_its_items(store: Store) -> None:
    provider = ScriptedProvider(words("an answer"))
    session = make_session(store, provider)
    first = session.open_startup_conversation()
    await run_turn(session, first, "a question")
    second = await session.open_conversation(None, first)

    reopened = await session.open_conversation(first.id, second)

    assert reopened.id == first.id
    assert [type(i) for i in reopened.items] == [UserPrompt, ModelResponse]
    assert reopened.items[1].text == "an answer"
    assert provider.lifecycle == ["conversation_left", "conversation_left"]


async def test_a_conversation_open_elsewhere_is_refused(store: Store, other: Store) -> None:
    provider = ScriptedProvider()
    session = make_session(store, provider)
    current = session.open_startup_conversation()
    theirs = other.create_conversation()

    with pytest.raises(ConversationRefused, match=OPEN_ELSEWHERE):
        await session.open_conversation(theirs.id, current)
    assert provider.lifecycle == []  # Nothing was left.
    assert not other.claim_conversation(current.id)  # Still ours.


async def test_a_conversation_that_is_gone_is_refused(store: Store) -> None:
    session = make_session(store)
    current = session.open_startup_conversation()

    with pytest.raises(ConversationRefused, match=GONE):
        await session.open_conversation("no such conversation", current)


async def test_a_failing_store_is_a_storage_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "chat.sqlite3")
    session = make_session(store)
    current = session.open_startup_conversation()
    store.close()

    with pytest.raises(StorageFailed, match=r"^The conversation could not be opened: "):
        await session.open_conversation(None, current)
    with pytest.raises(StorageFailed, match=r"^The conversation could not be deleted: "):
        session.delete_conversation(current.id)


def test_deleting_is_refused_while_another_chatui_has_the_conversation(
    store: Store, other: Store
) -> None:
    session = make_session(store)
    theirs = other.create_conversation()
    mine = store.create_conversation()

    with pytest.raises(ConversationRefused, match=OPEN_ELSEWHERE):
        session.delete_conversation(theirs.id)
    session.delete_conversation(mine.id)

    assert session.exists(theirs.id) and not session.exists(mine.id)


# Turns and titles


async def test_the_first_turn_titles_the_conversation(store: Store) -> None:
    session = make_session(store, ScriptedProvider(words("one"), words("two")))
    conversation = session.open_startup_conversation()

    _, outcome = await run_turn(session, conversation, "  What is\n the  weather " + "x" * 60)
    await run_turn(session, conversation, "a second prompt")

    assert session.last_outcome is not None and session.last_outcome.turn_id != outcome.turn_id
    assert len(conversation.title) == TITLE_LENGTH
    assert (
        conversation.title.startswith("What is the weather xxx") and conversation.title[-1] == "…"
    )
    assert dict(store.list_conversations())[conversation.id] == conversation.title


async def test_a_conversation_whose_first_reply_failed_is_titled_from_its_prompt(
    store: Store,
) -> None:
    session = make_session(store, ScriptedProvider([RAISE]))
    conversation = session.open_startup_conversation()

    _, outcome = await run_turn(session, conversation, "hello\n  there")

    assert outcome.state is ResponseState.FAILED
    assert session.last_outcome is outcome
    assert conversation.title == "hello there"
    assert dict(store.list_conversations())[conversation.id] == "hello there"


async def test_a_prompt_that_could_not_be_stored_titles_nothing(store: Store) -> None:
    """The conversation does not hold the prompt: a title from it would name nothing in it."""
    session = make_session(store, ScriptedProvider(words("hi")))
    conversation = session.open_startup_conversation()
    turn = session.new_turn(conversation, "hello", observer=QUIET)
    store._db.execute("DROP TABLE items")  # Saving the prompt fails.

    outcome = await turn.run()
    session.turn_finished(turn, outcome)

    assert outcome.state is ResponseState.FAILED and conversation.items == []
    assert conversation.title == "New conversation"
    assert dict(store.list_conversations())[conversation.id] == "New conversation"


async def test_a_title_that_cannot_be_saved_is_a_storage_error(store: Store) -> None:
    session = make_session(store, ScriptedProvider(words("hi")))
    conversation = session.open_startup_conversation()
    turn = session.new_turn(conversation, "hello", observer=QUIET)
    outcome = await turn.run()
    store.close()

    with pytest.raises(StorageFailed, match=r"^The conversation's title could not be saved: "):
        session.turn_finished(turn, outcome)
    assert session.last_outcome is outcome
    assert conversation.title == "hello"  # Kept in memory.


async def test_a_turn_gets_the_settings_the_clock_and_the_tools(store: Store) -> None:
    provider = ScriptedProvider(words("fine"))
    ticks = iter(range(1000))
    tools = ApprovingTools()
    session = make_session(store, provider, clock=lambda: next(ticks), tools=tools)
    conversation = session.open_startup_conversation()

    turn, outcome = await run_turn(session, conversation, "hi")

    assert outcome.state is ResponseState.COMPLETE
    assert turn.tools is tools and turn.clock is session.clock
    request = provider.last.request
    assert request.messages[0].role == "system" and request.messages[0].content == "Be brief."
    assert request.tools == tools.specs()


def test_without_a_provider_no_turn_starts_and_the_problem_is_told(store: Store) -> None:
    config = Config(provider="openai", db_path=str(store.path))
    session = Session(config, store, None, provider_error="Set an API key.")
    conversation = session.open_startup_conversation()

    with pytest.raises(NoProvider, match=r"^Set an API key\.$"):
        session.new_turn(conversation, "hi", observer=QUIET)
    assert session.startup_notice == "Set an API key."
    assert session.provider_label() == ("openai", "not available")
    assert Session(config, store, None).provider_problem() == "No model provider is configured."


# The approver


class ApprovingTools:
    """A tool runner double whose one tool, `ask`, needs the user's approval."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.answers: list[Approval] = []

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec("ask", "needs approval")]

    async def run(self, call: ToolCallPart, approve: Approver, report: ToolReport) -> ToolResult:
        answer = await approve(call)
        self.answers.append(answer)
        if answer is Approval.DENY:
            return ToolResult(call.id, call.name, "The user did not allow this call.", "error")
        self.ran.append(call.id)
        return ToolResult(call.id, call.name, "done")


def asking(call_id: str) -> list:
    return [*tool_call(0, call_id, "ask", ["{}"]), StreamEnd("tool_calls")]


async def test_the_approver_is_passed_to_the_tools(store: Store) -> None:
    session = make_session(
        store, ScriptedProvider(asking("c1"), asking("c2"), words("ok")), tools=ApprovingTools()
    )
    conversation = session.open_startup_conversation()
    asked: list[str] = []

    async def approve(call: ToolCallPart) -> Approval:
        asked.append(call.id)
        return Approval.ONCE if call.id == "c1" else Approval.DENY

    turn = session.new_turn(conversation, "go", observer=Sink(approve=approve))
    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE
    assert asked == ["c1", "c2"]
    assert session.tools.ran == ["c1"]


async def test_without_an_approver_nothing_that_needs_approval_runs(store: Store) -> None:
    tools = ApprovingTools()
    session = make_session(store, ScriptedProvider(asking("c1"), words("ok")), tools=tools)
    conversation = session.open_startup_conversation()

    await session.new_turn(conversation, "go", observer=QUIET).run()

    assert tools.answers == [Approval.DENY] and tools.ran == []


async def test_a_stop_while_the_approver_waits_interrupts_the_turn(store: Store) -> None:
    tools = ApprovingTools()
    provider = ScriptedProvider(asking("c1"), words("never"))
    session = make_session(store, provider, tools=tools)
    conversation = session.open_startup_conversation()
    waiting, ended = asyncio.Event(), []

    async def approve(call: ToolCallPart) -> Approval:
        waiting.set()
        try:
            await asyncio.Event().wait()  # The user has not answered yet.
        except asyncio.CancelledError:
            ended.append(call.id)
            raise
        return Approval.ONCE

    turn = session.new_turn(conversation, "go", observer=Sink(approve=approve))
    task = asyncio.create_task(turn.run())
    await waiting.wait()

    assert turn.cancel()
    outcome = await task

    assert outcome.state is ResponseState.INTERRUPTED
    assert ended == ["c1"] and tools.ran == [] and tools.answers == []
    (result,) = [
        i for i in store.load_conversation(conversation.id).items if isinstance(i, ToolResult)
    ]
    assert result.call_id == "c1" and result.state == "cancelled"
    assert len(provider.records) == 1  # No request after the stop.


# The provider's lifecycle


async def test_prepare_runs_once_and_always_ends_its_progress(store: Store) -> None:
    provider = ScriptedProvider()
    session = make_session(store, provider)
    progress: list[str | None] = []

    await session.prepare(progress.append)
    await session.prepare(progress.append)

    assert provider.lifecycle == ["prepare"]
    assert progress == [None]


async def test_a_failed_prepare_raises_and_still_ends_its_progress(store: Store) -> None:
    class Broken(ScriptedProvider):
        async def prepare(self, progress=lambda _: None) -> None:
            progress("loading model")
            raise ProviderError("the model file x does not exist")

    session = make_session(store, Broken())
    progress: list[str | None] = []

    with pytest.raises(ProviderError, match="does not exist"):
        await session.prepare(progress.append)
    assert progress == ["loading model", None]


async def test_close_closes_the_provider_once_and_stops_new_turns(store: Store) -> None:
    provider = ScriptedProvider()
    session = make_session(store, provider)

    await session.close()
    await session.close()

    assert provider.lifecycle == ["close"]
    assert session.quitting


def test_the_provider_notices_reach_the_session_notifier(store: Store) -> None:
    provider = ScriptedProvider()
    notices: list[str] = []
    make_session(store, provider, on_notice=notices.append)

    provider.on_notice("the KV cache could not be saved")

    assert notices == ["the KV cache could not be saved"]


class StreamOnly:
    """A provider with no lifecycle at all: it only streams."""

    name, model = "bare", "bare-1"

    @asynccontextmanager
    async def stream(self, request: ModelRequest) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async def events() -> AsyncIterator[StreamEvent]:
            yield StreamEnd("stop")

        yield events()


async def test_a_provider_without_a_lifecycle_gets_the_no_op_one(store: Store) -> None:
    session = make_session(store, StreamOnly(), on_notice=lambda _text: None)
    progress: list[str | None] = []

    await session.prepare(progress.append)
    current = session.open_startup_conversation()
    await session.open_conversation(None, current)
    await session.close()

    assert progress == [None]
    assert session.provider_label() == ("bare", "bare-1")
