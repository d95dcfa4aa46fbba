"""The local provider in tests: its config, a look into its KV cache, and holds on llama.cpp.

The holds make a stop land at an exact point on any machine: half-way through
reading a prompt, or at a reply's N-th token. They wrap the engine's `eval` so
the rest of the work waits until the turn is stopped. `ask` streams one
request straight to the provider (no turn), and can stop it; `reference_reply`
is what a provider never stopped answers, for a stopped one to be compared with.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp

from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.history import ChatMessage
from chatui.providers.base import ModelRequest, StreamEvent, TextDelta, ToolSpec
from chatui.providers.local.chat_format import GEMMA_TEMPLATE
from chatui.providers.local.llama_engine import GenerationJob
from chatui.providers.local.provider import LocalProvider
from chatui.store import Store
from tests.support.turns import run_turn


def local_config(model: Path, **overrides: object) -> LocalConfig:
    values = dict(
        model_path=str(model),
        n_ctx=4096,
        temperature=0.0,
        repeat_penalty=1.0,
        max_tokens=24,
        n_threads=2,
        chat_template=GEMMA_TEMPLATE,  # The default model's format (the tiny GGUF's trims).
    )
    values.update(overrides)
    return LocalConfig(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def fresh_provider(model: Path, **config: object) -> AsyncIterator[LocalProvider]:
    """A local provider of `local_config(model, **config)`, prepared, with no saved state.

    Nothing it does is kept: it is closed when the block ends.
    """
    provider = LocalProvider(local_config(model, **config), state_dir=None)
    await provider.prepare()
    try:
        yield provider
    finally:
        await provider.close()


async def reference_reply(model: Path, store: Store, prompt: str, tokens: int) -> str:
    """The reply a turn of `prompt` gets, `tokens` tokens at most, from a provider never stopped.

    Greedy sampling makes it the one a stopped and continued reply must read, character
    for character. The turn runs in a new conversation of `store`, on a fresh provider.
    """
    async with fresh_provider(model, max_tokens=tokens) as fresh:
        outcome, _ = await run_turn(fresh, store, store.create_conversation(), prompt)
    (reply,) = outcome.responses
    return reply.text


def cache_state(provider: LocalProvider) -> tuple[int, int, int]:
    """(n_tokens, committed tokens, last position in the KV cache + 1)."""
    engine = provider.engine
    assert engine is not None and engine.llm is not None and engine.kv is not None

    def read() -> tuple[int, int, int]:
        memory = llama_cpp.llama_get_memory(engine.llm.ctx)
        top = llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1
        return engine.llm.n_tokens, len(engine.kv.committed), top

    return engine.call(read).result()


def wait_for_the_stop(provider: LocalProvider) -> None:
    """On the engine thread: block until the running job's turn is stopped."""
    stopped = threading.Event()
    provider.last_job.cancel.on_cancel(stopped.set)
    assert stopped.wait(30), "the turn was never stopped"


def hold_the_prefill_midway(provider: LocalProvider) -> threading.Event:
    """From now on, a long prompt is read in part, then held until the turn is stopped.

    The stop lands while the prompt is half read, on any machine: the rest of it is
    read only once the stop was asked for, and the abort ends that decode. The event
    is set once the prompt is held.
    """
    llm = provider.engine.llm
    original, held = llm.eval, threading.Event()

    def eval_in_two(tokens):  # type: ignore[no-untyped-def]
        if len(tokens) <= 100:
            return original(tokens)
        original(tokens[:64])  # 64 tokens of the prompt are in the cache...
        held.set()
        wait_for_the_stop(provider)
        return original(tokens[64:])  # ...and the rest is read after the stop.

    llm.eval = eval_in_two
    return held


def hold_the_reply_at(provider: LocalProvider, tokens: int) -> None:
    """From now on, a reply's `tokens`-th token is evaluated only once the turn is stopped.

    Each token is shown as it is sampled, before it is evaluated: by then the reply
    has shown `tokens` tokens, however fast or slow the model runs here.
    """
    llm = provider.engine.llm
    original, evaluated = llm.eval, [0]

    def eval_held(batch):  # type: ignore[no-untyped-def]
        if len(batch) == 1:  # Generation evaluates one token at a time.
            evaluated[0] += 1
            if evaluated[0] == tokens:
                wait_for_the_stop(provider)
        return original(batch)

    llm.eval = eval_held


def hold_after_the_reply_token(provider: LocalProvider, tokens: int) -> threading.Event:
    """From now on, once a reply's `tokens`-th token is evaluated, the reply waits for the stop.

    Stop the turn only once the event is set: the stop then lands between two
    tokens, after `tokens` tokens were shown and evaluated and the next one was
    sampled, on any machine. Holds one reply, once.
    """
    llm = provider.engine.llm
    original, evaluated, held = llm.eval, [0], threading.Event()

    def eval_then_hold(batch):  # type: ignore[no-untyped-def]
        original(batch)
        if len(batch) == 1 and not held.is_set():  # Generation evaluates one token at a time.
            evaluated[0] += 1
            if evaluated[0] == tokens:
                held.set()
                wait_for_the_stop(provider)

    llm.eval = eval_then_hold
    return held


def fail_the_next_decode(provider: LocalProvider) -> None:
    """The next evaluation raises, as a llama.cpp failure that no stop asked for would."""
    llm = provider.engine.llm
    original = llm.eval

    def failing(batch):  # type: ignore[no-untyped-def]
        llm.eval = original
        raise RuntimeError("llama_decode returned -3")

    llm.eval = failing


@dataclass
class Asked:
    """One request's stream as the provider gave it, and the engine's job for it."""

    events: list[StreamEvent]
    job: GenerationJob
    error: BaseException | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)


async def ask(
    provider: LocalProvider,
    messages: Sequence[ChatMessage],
    *,
    conversation: str = "c",
    continuing: bool = False,
    tools: Sequence[ToolSpec] = (),
    stop_after: int | None = None,
    stop_when: threading.Event | None = None,
) -> Asked:
    """Stream one request; stop it at its `stop_after`-th text piece, or once `stop_when` is set.

    A provider error is kept in `Asked.error`, not raised.
    """
    token = CancelToken()
    request = ModelRequest(list(messages), token, list(tools), conversation, continuing=continuing)
    events: list[StreamEvent] = []
    texts: list[str] = []
    watcher = None
    if stop_when is not None:

        async def stop_once_held() -> None:
            assert await asyncio.to_thread(stop_when.wait, 30), "the reply was never held"
            token.cancel()  # A no-op if the reply ended (below) without being held.

        watcher = asyncio.create_task(stop_once_held())
    error = None
    try:
        async with provider.stream(request) as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, TextDelta):
                    texts.append(event.text)
                    if stop_after is not None and len(texts) >= stop_after:
                        token.cancel()
    except Exception as failure:
        error = failure
    if watcher is not None:
        stop_when.set()  # type: ignore[union-attr]  # Lets the watcher go if it was never held.
        await watcher
    assert provider.last_job is not None
    return Asked(events, provider.last_job, error, texts)


TOOLS_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{%- if loop.first and tools -%}"
    "{%- for tool in tools -%}"
    "{%- set f = tool['function'] -%}"
    "{%- set params = f['parameters'] -%}"
    "{{ f['name'] + ': ' + f['description'] + '\n' }}"
    "{%- for name, spec in params.get('properties', {}).items() -%}"
    "{{ '- ' ~ name ~ ': ' ~ ('str' if spec['type'] == 'string' else spec['type']) }}"
    "{%- if name in params.get('required', []) %}{{ ', required' }}{% endif -%}"
    "{%- for key, value in spec.items() if key != 'type' -%}"
    "{{ ', ' + key + '=' + (value | tojson) }}"
    "{%- endfor -%}"
    "{{ '\n' }}"
    "{%- endfor -%}"
    "{{ tool | tojson }}{{ '\n\n' }}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ message['content'] | trim }}"
    "{%- for call in message.get('tool_calls', []) -%}"
    "{{ '<tool_call>' + (call['function'] | tojson) + '</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
"""A GGUF's own template that shows tools as templates do: it walks the schema,
prints its keys and values, compares its types, and dumps it with `tojson`."""

HONEST_TOOL = ToolSpec(
    "search",
    "Search the notes.",
    {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "title": "Query",
                "pattern": "^\\w+$",
                "examples": ["to do"],
            },
            "mode": {"type": "string", "enum": ["fast", "exact"], "default": "fast"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "default": 10},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "type": {"type": "string", "description": "A property named like a keyword."},
        },
        "required": ["query", "type"],
        "additionalProperties": False,
    },
)
