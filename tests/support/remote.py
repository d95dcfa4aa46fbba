"""Shared by the remote-provider tests: the secret, waits on the loop, checks, and `Wire`.

A turn on a remote provider is stopped by `run_and_stop_when` and continued by
`continue_turn`, with the test key's settings.

A `Wire` describes one remote API to a test written once for both
(`WIRES`): its provider on a test server, the checks its server makes, and
each piece of a reply framed the way that API streams it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import anthropic
import openai

from chatui.cancel import CancelToken
from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.history import ChatMessage
from chatui.messages import ModelResponse, ResponseState
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import ModelRequest, RetryWait, StreamEvent, TextDelta
from chatui.providers.openai_chat import OpenAIProvider
from chatui.providers.remote import RemoteProvider
from chatui.store import Store
from chatui.turn import Turn, TurnOutcome, TurnSettings
from chatui.turn_kinds import Continue
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.clocks import LoopClock
from tests.support.turns import Sink, make_turn
from tests.support.wire import Raw, Send, Step, Validator, WireServer

SECRET = "sk-test-4f9a2c7e1b8d6053aa71c0de99f1e2b3"  # Key-shaped: must never show.
WAIT = 10.0  # The most any step below waits for the other side.


def settings(**values: object) -> TurnSettings:
    return TurnSettings(secrets=[SECRET], **values)  # type: ignore[arg-type]


async def when(condition, timeout: float = WAIT) -> None:  # type: ignore[no-untyped-def]
    """Wait, turn by turn of the loop, until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def request(
    provider: RemoteProvider, messages: list[ChatMessage], *, continuing: bool = False
) -> list[StreamEvent]:
    """Send one request straight to `provider` (no turn) and return all its stream's events."""
    sent = ModelRequest(messages, CancelToken(), continuing=continuing)
    async with provider.stream(sent) as events:
        return [event async for event in events]


async def run_and_stop_when(turn: Turn, condition: Callable[[], object]) -> None:
    """Run `turn` and stop it (Esc) once `condition()` holds: it must end interrupted."""
    task = asyncio.create_task(turn.run())
    await when(condition)
    turn.cancel()
    assert (await task).state is ResponseState.INTERRUPTED


def continue_turn(
    store: Store, provider: RemoteProvider, turn: Turn, reply: ModelResponse, **kw: Any
) -> tuple[Turn, Sink]:
    """A turn, not started, that continues `reply` in `turn`'s conversation (`make_turn`'s `kw`)."""
    return make_turn(
        store,
        provider,
        conversation=turn.conversation,
        settings=settings(),
        prompt=Continue(reply),
        **kw,
    )


def texts(events: list[StreamEvent]) -> list[str]:
    """The text pieces among `events`, in order."""
    return [event.text for event in events if isinstance(event, TextDelta)]


def retry_waits(sink: Any) -> list[RetryWait]:
    """The retry waits a turn's sink was told of, in order."""
    return [e.payload for e in sink.events if isinstance(e.payload, RetryWait)]


async def run_skipping_retry_waits(run: Coroutine[Any, Any, TurnOutcome], sink: Any) -> TurnOutcome:
    """Run a turn, moving the loop's clock past each retry wait it announces.

    The waits (1 s, then 2 s) are real policy, but a test need not sit through
    them: the provider announces each wait to the sink, then sleeps on the
    loop's clock, and the clock moves on by exactly that wait once the test has
    seen it announced. (Were the clock to move before the sleep began, the
    wait would take its real time: slower, never wrong.)
    """
    clock, task = LoopClock(), asyncio.ensure_future(run)
    skipped = 0
    while not task.done():
        await when(lambda done=skipped: task.done() or len(retry_waits(sink)) > done)
        for wait in retry_waits(sink)[skipped:]:
            await clock.advance(wait.seconds)
            skipped += 1
    return task.result()


async def disconnected(server: WireServer, n: int = 1) -> None:
    """Wait until the server saw request `n`'s client leave, or its reply end."""
    request = await asyncio.to_thread(server.wait_for_request, n)
    assert await asyncio.to_thread(request.ended.wait, WAIT), "the reply never ended"
    assert request.disconnected, "the server never saw the client disconnect"


def key_runs(text: str, run: int = 8) -> list[str]:
    """The runs of `run` characters of `SECRET` in `text`: a cut key leaks as one."""
    return sorted({SECRET[i : i + run] for i in range(len(SECRET) - run + 1)} & _runs(text, run))


def _runs(text: str, run: int) -> set[str]:
    return {text[i : i + run] for i in range(len(text) - run + 1)}


def assert_no_secret(store: Store, *texts: str | None) -> None:
    """Neither `texts` nor anything stored holds the key, whole or any 8 characters of it."""
    for text in texts:
        assert key_runs(text or "") == []
    for conversation_id, _title in store.list_conversations():
        dump = repr(store.load_conversation(conversation_id).items)
        assert key_runs(dump) == []


def openai_at(base_url: str, **config: object) -> OpenAIProvider:
    """The OpenAI provider on a server at `base_url` (its /v1 added), with the test key."""
    values: dict[str, object] = {
        "api_key": SECRET,
        "base_url": f"{base_url}/v1",
        "model": "wire-model",
    }
    values.update(config)
    return OpenAIProvider(OpenAIConfig(**values))  # type: ignore[arg-type]


def anthropic_at(base_url: str, **config: object) -> AnthropicProvider:
    """The Anthropic provider on a server at `base_url`, with the test key."""
    values: dict[str, object] = {"api_key": SECRET, "base_url": base_url, "model": "wire-model"}
    values.update(config)
    return AnthropicProvider(AnthropicConfig(**values))  # type: ignore[arg-type]


PROVIDERS: dict[str, Callable[..., RemoteProvider]] = {
    "openai": openai_at,
    "anthropic": anthropic_at,
}
"""Each remote provider by name, on a server at a base URL."""


class Wire:
    """One remote API, as a test written once for both sees it (see the module docstring).

    What differs between the APIs lives here, so a shared test reads the same
    for both: the request's path, where the system prompt goes, how a reply,
    a tool call or an error is framed. `OpenAIWire` and `AnthropicWire` fill it in.
    """

    name: ClassVar[str]  # The provider's name, and the test id.
    label: ClassVar[str]  # How error texts name the server at a test URL.
    key_variable: ClassVar[str]  # The environment variable an error about the key names.
    path: ClassVar[str]  # Where a streamed request goes.
    stream_fields: ClassVar[dict[str, Any]]  # What a request body holds to ask for a stream.
    busy: ClassVar[int]  # The status of a server too busy to answer now (retried).
    opening_input_tokens: ClassVar[int | None]  # Input counted before any text, if the API does.
    sdk_stream: ClassVar[type]  # The SDK class whose `create` opens the stream.
    validate: ClassVar[Validator]  # The API's own checks of a request.
    continues_by: ClassVar[str]  # How its provider continues a reply here by default.

    def __repr__(self) -> str:
        return self.name

    def serve(self) -> WireServer:
        """A test server (a context manager) that checks requests as this API does."""
        return WireServer(validate=self.validate)

    def provider(self, base_url: str, **config: object) -> RemoteProvider:
        """The provider on a server at `base_url`, with the test key."""
        return PROVIDERS[self.name](base_url, **config)

    def api_url(self, base_url: str) -> str:
        """The `base_url` the provider is given for a server at `base_url`."""
        return base_url

    def keyless(self) -> RemoteProvider:
        """The provider with no key and nothing that would stand in for one."""
        raise NotImplementedError

    def reply(self, *texts: str, input_tokens: int = 10, output_tokens: int = 5) -> list[Step]:
        """A whole reply of `texts`, ending normally, with its usage."""
        raise NotImplementedError

    def opening(self, *texts: str, cut: bool = False) -> list[Step]:
        """The start of a reply, and `texts` as its first words; `cut`: they go on no further."""
        raise NotImplementedError

    def call(
        self, n: int, call_id: str, name: str, *fragments: str, cut: bool = False
    ) -> list[Step]:
        """The reply's `n`-th call (from 0), whole unless `cut`, after `opening`."""
        raise NotImplementedError

    def ending(self, reason: str) -> list[Step]:
        """The end of a reply for OpenAI's finish `reason` ("stop", "tool_calls", "length")."""
        raise NotImplementedError

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        """An error reply's JSON body, of type `kind` (Anthropic's names)."""
        raise NotImplementedError

    def error_event(self, error: object) -> Step:
        """An error sent in a stream that had begun; `error` its `error` field, of any shape."""
        raise NotImplementedError

    def not_json(self) -> Step:
        """An event whose data is not JSON."""
        raise NotImplementedError

    def user(self, text: str) -> dict[str, Any]:
        """The user's `text` as a message of a request body."""
        raise NotImplementedError

    def prompt_of(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        """A request body's system prompt (None if none was sent) and its other messages."""
        raise NotImplementedError

    def text_of(self, message: dict[str, Any]) -> str:
        """The text of a message of a request body, its text blocks joined."""
        raise NotImplementedError


class OpenAIWire(Wire):
    """Chat Completions: chunks of deltas, usage in a chunk of its own, then [DONE]."""

    name = "openai"
    label = "OpenAI-compatible server"
    key_variable = "OPENAI_API_KEY"
    path = "/v1/chat/completions"
    stream_fields: ClassVar[dict[str, Any]] = {
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    busy = 503
    opening_input_tokens = None  # The usage chunk comes last, or never.
    sdk_stream = openai.resources.chat.completions.AsyncCompletions
    validate = staticmethod(ow.validate)
    continues_by = "instruction"  # A server that says nothing of itself, as OpenAI.

    def api_url(self, base_url: str) -> str:
        return f"{base_url}/v1"

    def keyless(self) -> RemoteProvider:
        # A base_url alone is a local server that needs no key: a placeholder is sent then.
        return OpenAIProvider(OpenAIConfig(api_key="", base_url=""))

    def reply(self, *texts: str, input_tokens: int = 10, output_tokens: int = 5) -> list[Step]:
        return ow.reply(*texts, usage=(input_tokens, output_tokens))

    def opening(self, *texts: str, cut: bool = False) -> list[Step]:
        return ow.text(*texts)  # A delta never says that more will follow.

    def rest(self, *texts: str) -> list[Step]:
        return ow.reply(*texts)

    def call(
        self, n: int, call_id: str, name: str, *fragments: str, cut: bool = False
    ) -> list[Step]:
        return ow.tool_call(n, call_id, name, *fragments)  # Whole once the reply ends for it.

    def ending(self, reason: str) -> list[Step]:
        return ow.ending(reason)

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": kind}}

    def error_event(self, error: object) -> Step:
        return Send({"error": error})

    def not_json(self) -> Step:
        return Raw(b"data: {not json\n\n")

    def user(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": text}

    def prompt_of(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        messages = body["messages"]
        if messages and messages[0]["role"] == "system":
            return messages[0]["content"], messages[1:]
        return None, messages

    def text_of(self, message: dict[str, Any]) -> str:
        return message.get("content") or ""


class AnthropicWire(Wire):
    """Messages: `message_start`, content blocks (text at 0, then calls), `message_stop`."""

    name = "anthropic"
    label = "Anthropic"
    key_variable = "ANTHROPIC_API_KEY"
    path = "/v1/messages"
    stream_fields: ClassVar[dict[str, Any]] = {"stream": True}
    busy = 529  # Anthropic's own "overloaded".
    opening_input_tokens = 10  # `message_start` counts the input (`aw.start`).
    sdk_stream = anthropic.resources.messages.AsyncMessages
    validate = staticmethod(aw.validate)
    continues_by = "prefill"
    STOPS: ClassVar[dict[str, str]] = {
        "stop": "end_turn",
        "tool_calls": "tool_use",
        "length": "max_tokens",
    }

    def keyless(self) -> RemoteProvider:
        return AnthropicProvider(AnthropicConfig(api_key=""))

    def reply(self, *texts: str, input_tokens: int = 10, output_tokens: int = 5) -> list[Step]:
        return aw.reply(*texts, input_tokens=input_tokens, output_tokens=output_tokens)

    def opening(self, *texts: str, cut: bool = False) -> list[Step]:
        return [*aw.start(), *(aw.text_block(0, *texts, stop=not cut) if texts else [])]

    def rest(self, *texts: str) -> list[Step]:
        return [*aw.text_block(0, *texts)[1:], *aw.ending()]  # Block 0's deltas, its stop.

    def call(
        self, n: int, call_id: str, name: str, *fragments: str, cut: bool = False
    ) -> list[Step]:
        return aw.tool_block(n + 1, call_id, name, *fragments, stop=not cut)

    def ending(self, reason: str) -> list[Step]:
        return aw.ending(self.STOPS[reason])

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        return aw.error_body(kind, message)

    def error_event(self, error: object) -> Step:
        return Send({"type": "error", "error": error}, event="error")

    def not_json(self) -> Step:
        return Raw(b"event: content_block_delta\ndata: {not json\n\n")

    def user(self, text: str) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "text", "text": text}]}

    def prompt_of(self, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
        return body.get("system"), body["messages"]

    def text_of(self, message: dict[str, Any]) -> str:
        content = message["content"]
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content if block["type"] == "text")


WIRES: list[Wire] = [OpenAIWire(), AnthropicWire()]
"""Both remote APIs: a shared test's fixture takes its params (and ids) from here."""
