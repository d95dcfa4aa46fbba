"""The OpenAI provider against a real third-party server: llama-cpp-python's `llama_cpp.server`.

`tests/wire.py` scripts the server's side; here the stream comes from
llama.cpp itself, serving the tiny random-weight GGUF (written with
`suppress_eog=True`, so a reply runs until `max_tokens`), in-process on a
uvicorn thread. A probe wraps the server's per-request event publisher and
`Llama.generate`, so the tests see, server side, each request's arguments,
how many tokens it generated, and whether its stream ended by cancellation.

What this server does, as the tests pin it: it drops `stream_options`, so a
stream carries no usage (chatui estimates it, and flags it); on a client
disconnect uvicorn sends `http.disconnect`, sse-starlette's disconnect
listener cancels the response's task group, and the publisher stops pulling
tokens (its own `request.is_disconnected()` check after each chunk is a
second route, enough by itself).
`interrupt_requests` is off: otherwise a waiting follow-up request would stop
the first generation by itself, and a stop would prove nothing about Esc.

A final assistant message is not continued: with the GGUF's chat template,
this server always adds the generation prompt, so it closes that message with
`<end_of_turn>` and opens a new model turn after it, and it ignores vLLM's
`continue_final_message`. It reports no kind (`/props` is a 404, `/v1/models`
says `owned_by` "me"), so Continue asks it by instruction.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import llama_cpp
import llama_cpp.server.app as server_app
import openai
import pytest
import uvicorn
from llama_cpp.server.settings import ModelSettings, ServerSettings

from chatui.config import DEFAULT_INTERRUPTED_NOTE, OpenAIConfig
from chatui.history import ChatMessage
from chatui.messages import ResponseState
from chatui.providers.openai_chat import OpenAIProvider
from chatui.providers.remote import continue_instruction
from chatui.store import Store
from chatui.turn import Turn
from tests.support.remote import WAIT, request, settings, texts
from tests.support.tiny_gguf import write_tiny_model
from tests.support.turns import Sink, make_turn, stored

ALIAS = "tiny-gguf"
N_CTX = 2048
LONG = 1500  # A reply that would take seconds; prompt + LONG fits in N_CTX.
SHORT = 8


@dataclass
class Generation:
    """One streamed request as the server handled it."""

    request: dict[str, Any]
    prompt: str = ""  # The prompt the server rendered for it, special tokens spelled out.
    tokens: int = 0  # Tokens `Llama.generate` yielded for it.
    cancelled: bool = False  # Its publisher ended by cancellation: the client left.
    ended: threading.Event = field(default_factory=threading.Event)  # Lock released.


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf", suppress_eog=True)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("CONFIG_FILE", raising=False)  # It would replace the settings below.
        app = server_app.create_app(
            server_settings=ServerSettings(
                host="127.0.0.1", port=0, api_key=None, interrupt_requests=False
            ),
            model_settings=[
                ModelSettings(
                    model=str(model), model_alias=ALIAS, n_ctx=N_CTX, n_threads=2, verbose=False
                )
            ],
        )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # Bound before the thread starts: no race for the port.
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "llama_cpp.server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(WAIT)
    sock.close()
    assert not thread.is_alive(), "llama_cpp.server did not stop"


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[Generation]:
    """Every streamed request the server handles during the test, in order."""
    seen: list[Generation] = []
    publish, generate = server_app.get_event_publisher, llama_cpp.Llama.generate

    async def probed_publish(*args: Any, **kwargs: Any) -> None:
        generation = Generation(request=dict(kwargs["kwargs"]))  # What `Llama` is called with.
        seen.append(generation)
        try:
            await publish(*args, **kwargs)
        except anyio.get_cancelled_exc_class():
            generation.cancelled = True
            raise
        finally:
            generation.ended.set()

    def probed_generate(self: llama_cpp.Llama, *args: Any, **kwargs: Any) -> Iterator[int]:
        generation = seen[-1]  # The server runs one request at a time (its lock).
        prompt = args[0] if args else kwargs["tokens"]
        generation.prompt = self.detokenize(list(prompt), special=True).decode("utf-8", "replace")
        for token in generate(self, *args, **kwargs):
            generation.tokens += 1
            yield token

    monkeypatch.setattr(server_app, "get_event_publisher", probed_publish)
    monkeypatch.setattr(llama_cpp.Llama, "generate", probed_generate)
    return seen


@pytest.fixture
async def long_provider(base_url: str) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(OpenAIConfig(base_url=base_url, model=ALIAS, max_tokens=LONG))
    yield provider
    await provider.close()


@pytest.fixture
async def short_provider(base_url: str) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(OpenAIConfig(base_url=base_url, model=ALIAS, max_tokens=SHORT))
    yield provider
    await provider.close()


async def interrupted_turn(store: Store, provider: OpenAIProvider) -> tuple[Turn, Sink]:
    """A long reply, stopped (as Esc does) as its fifth text delta reaches the UI.

    The stop lands between two reads of the stream, not in one: only chatui's
    own close of the stream, not a cancelled read, then ends the connection.
    """
    turn, sink = make_turn(store, provider, settings=settings())
    sink.react = lambda _: len(sink.texts) == 5 and turn.cancel()
    assert (await turn.run()).state is ResponseState.INTERRUPTED
    assert len(sink.texts) == 5
    return turn, sink


async def test_a_short_reply_streams_completes_and_estimates_the_usage_it_lacks(
    short_provider: OpenAIProvider, store: Store, generations: list[Generation]
) -> None:
    turn, sink = make_turn(store, short_provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    response = stored(store, turn)[-1]
    assert response.state is ResponseState.COMPLETE
    assert response.text and response.text == "".join(sink.texts)
    assert response.finish_reason == "length"
    assert response.usage.estimated  # llama_cpp.server drops stream_options: no usage chunk.
    (generation,) = generations
    assert generation.request["model"] == ALIAS and generation.request["max_tokens"] == SHORT
    assert generation.request["messages"][-1]["content"] == "hi"
    assert generation.tokens == SHORT and not generation.cancelled


async def test_esc_mid_stream_keeps_the_partial_and_stops_the_generation_on_the_server(
    long_provider: OpenAIProvider,
    short_provider: OpenAIProvider,
    store: Store,
    generations: list[Generation],
) -> None:
    turn, sink = await interrupted_turn(store, long_provider)

    response = stored(store, turn)[-1]
    assert response.state is ResponseState.INTERRUPTED
    assert response.text and response.text == "".join(sink.texts)
    assert sink.after_stop == 0
    # Server side: the disconnect cancelled the publisher, within a few tokens of the
    # close (each token waits on the server's loop, which sees the EOF at once). Without
    # chatui's close the connection lingers until the stream is garbage collected: ~800.
    (first,) = generations
    closed_at = first.tokens
    assert await anyio.to_thread.run_sync(first.ended.wait, WAIT), "the generation never ended"
    assert first.cancelled, "the server did not see the client leave"
    assert len(sink.texts) <= closed_at <= first.tokens <= closed_at + 10
    assert first.tokens < LONG / 2
    stopped_at = first.tokens

    # The server runs one request at a time: this one ran only after the first let go.
    second, _ = make_turn(
        store, short_provider, conversation=turn.conversation, settings=settings()
    )
    assert (await second.run()).state is ResponseState.COMPLETE
    assert [g.tokens for g in generations] == [stopped_at, SHORT]  # The first never resumed.


async def test_the_turn_after_an_interrupted_one_completes_without_the_partial_reply(
    long_provider: OpenAIProvider,
    short_provider: OpenAIProvider,
    store: Store,
    generations: list[Generation],
) -> None:
    first, sink = await interrupted_turn(store, long_provider)
    partial = "".join(sink.texts)

    second, _ = make_turn(
        store, short_provider, conversation=first.conversation, settings=settings(), prompt="again"
    )
    outcome = await second.run()

    assert outcome.state is ResponseState.COMPLETE, outcome.error
    assert stored(store, second)[-1].text
    messages = generations[1].request["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", f"hi\n\n{DEFAULT_INTERRUPTED_NOTE}\n\nagain")
    ]
    assert all(partial not in m["content"] for m in messages)
    assert [m.state for m in stored(store, second)[1::2]] == [
        ResponseState.INTERRUPTED,
        ResponseState.COMPLETE,
    ]


# Continuing a reply on this server

CUT = [ChatMessage("user", "hi"), ChatMessage("assistant", "Roses are ")]
"""A reply cut short after "Roses are ", to continue."""
GO_ON = continue_instruction("Roses are")
"""The instruction that asks to continue `CUT`: it names the words to begin with again."""
ASKED = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nRoses are"


async def test_a_final_assistant_message_is_answered_with_a_new_turn_not_continued(
    base_url: str, generations: list[Generation]
) -> None:
    """What a forced prefill gets here, and why "auto" does not prefill on this server."""
    provider = OpenAIProvider(
        OpenAIConfig(base_url=base_url, model=ALIAS, max_tokens=SHORT, continue_with="prefill")
    )
    await request(provider, CUT, continuing=True)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none")  # With vLLM's own fields.
    await client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Roses are"}],
        max_tokens=1,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )

    assert generations[0].request["messages"][-1] == {"role": "assistant", "content": "Roses are"}
    for generation in generations:  # The message is closed, and a new turn opened after it.
        assert generation.prompt.endswith(f"{ASKED}<end_of_turn>\n<start_of_turn>model\n")
    await client.close()
    await provider.close()


async def test_continue_asks_this_server_by_instruction_and_streams_only_the_new_text(
    short_provider: OpenAIProvider, generations: list[Generation]
) -> None:
    events = await request(short_provider, CUT, continuing=True)

    (generation,) = generations
    assert generation.prompt.endswith(
        f"{ASKED}<end_of_turn>\n<start_of_turn>user\n{GO_ON}<end_of_turn>\n<start_of_turn>model\n"
    )
    assert generation.tokens == SHORT and texts(events)
    assert "Roses are" not in "".join(texts(events))  # Only what the server generated.
