"""Shared by the remote-provider tests: the secret, waits on the loop, and checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import RetryWait
from chatui.providers.openai_chat import OpenAIProvider
from chatui.providers.remote import RemoteProvider
from chatui.store import Store
from chatui.turn import TurnOutcome, TurnSettings
from tests.support.clocks import LoopClock
from tests.support.wire import WireServer

SECRET = "sk-test-4f9a2c7e1b8d6053aa71c0de99f1e2b3"  # Key-shaped: must never show.
WAIT = 10.0  # The most any step below waits for the other side.


def settings(**values: object) -> TurnSettings:
    return TurnSettings(secrets=[SECRET], **values)  # type: ignore[arg-type]


async def when(condition, timeout: float = WAIT) -> None:  # type: ignore[no-untyped-def]
    """Wait, turn by turn of the loop, until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


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
