"""Esc at each stop point of a tool call, with each provider: what the stop tests share.

- `Rig(kind, tmp_path, model)`: one provider kind of `KINDS`: OpenAI or
  Anthropic (the real SDK against the validating wire server, whose replies
  the test scripts with `calls` and `answer`), or local (real llama.cpp on
  the tiny GGUF, with `tool_choice = "required"`: a grammar writes its
  calls from the offered tools' schemas).
- `views`, `statuses`, `stored`: the app's tool-call views, their statuses,
  and the conversation's stored items.
- `assert_stopped_on_screen`, `assert_both_protocols_accept`, and
  `next_turn_is_accepted`: the checks after a stop (the next request is
  accepted; for local, the KV cache holds only committed tokens).
- `stall_local_decode`: holds the local engine midway through a reply until
  the turn is stopped.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.history import build_history
from chatui.messages import ModelResponse, ResponseState, ToolResult, UserPrompt
from chatui.providers.anthropic_messages import AnthropicProvider, to_anthropic_messages
from chatui.providers.local.provider import LocalProvider
from chatui.providers.openai_chat import OpenAIProvider, to_openai_messages
from chatui.screens.turn_view import TurnView
from chatui.store import Store
from chatui.turn import ToolResultAdded
from chatui.widgets.chat_message import AssistantMessage
from chatui.widgets.status_bar import StatusBar
from chatui.widgets.tool_call import ToolCallView
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import send, settled, wait_until
from tests.support.local import cache_state, local_config
from tests.support.remote import SECRET
from tests.support.wire import STALL, WireServer

KINDS = ["openai", "anthropic", "local"]
NEXT_REPLY_TOKENS = 64  # The local model's reply to the prompt after the stop.


class Rig:
    """One provider kind: its provider, and how the test scripts its model."""

    def __init__(self, kind: str, tmp_path: Path, model: Path) -> None:
        self.kind = kind
        self.server: WireServer | None = None
        if kind == "local":
            config = local_config(model, tool_choice="required", max_tokens=1000)
            self.provider: Any = LocalProvider(config, state_dir=tmp_path / "kv")
        else:
            validate = ow.validate if kind == "openai" else aw.validate
            self.server = WireServer(validate=validate).__enter__()
            settings = {"api_key": SECRET, "model": "wire-model"}
            if kind == "openai":
                self.provider = OpenAIProvider(
                    OpenAIConfig(base_url=f"{self.server.base_url}/v1", **settings)
                )
            else:
                self.provider = AnthropicProvider(
                    AnthropicConfig(base_url=self.server.base_url, **settings)
                )

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def calls(self, *calls: tuple[str, str, list[str]], cut: bool = False) -> None:
        """Play a reply with text, then `calls` (id, name, argument fragments).

        `cut`: the last call's arguments stop midway and the server stalls.
        """
        assert self.server is not None
        if self.kind == "openai":
            steps = [*ow.text("Let me see.")]
            for n, (call_id, name, fragments) in enumerate(calls):
                steps += ow.tool_call(n, call_id, name, *fragments)
            steps += [STALL] if cut else ow.ending("tool_calls")
        else:
            steps = [*aw.start(), *aw.text_block(0, "Let me see.")]
            for n, (call_id, name, fragments) in enumerate(calls, start=1):
                last = n == len(calls)
                steps += aw.tool_block(n, call_id, name, *fragments, stop=not (cut and last))
            steps += [STALL] if cut else aw.ending("tool_use")
        self.server.play(steps)

    def answer(self, text: str) -> None:
        assert self.server is not None
        self.server.play(ow.reply(text) if self.kind == "openai" else aw.reply(text))

    def close(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
        if self.local:
            asyncio.run(self.provider.close())  # Its llama.cpp thread and model.


def views(app) -> list[ToolCallView]:  # type: ignore[no-untyped-def]
    return list(app.chat.query(ToolCallView))


def statuses(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [view.status for view in views(app)]


def stored(store: Store, app) -> list:  # type: ignore[no-untyped-def]
    return store.load_conversation(app.chat.conversation.id).items


def assert_both_protocols_accept(items: list, prompt: str = "again") -> None:
    """The repaired history of `items` and a next prompt, as both APIs would get it."""
    history = build_history([*items, UserPrompt(prompt)])
    openai_messages = to_openai_messages(history)
    assert ow.validate({"messages": openai_messages}) is None
    _system, anthropic_messages = to_anthropic_messages(history)
    assert aw.validate({"messages": anthropic_messages, "max_tokens": 64}) is None


def assert_stopped_on_screen(app) -> None:  # type: ignore[no-untyped-def]
    assert app.chat.query_one(StatusBar).state == "stopped"
    assert app.last_outcome is not None and app.last_outcome.state is ResponseState.INTERRUPTED
    marker_text = str(app.chat.query(AssistantMessage).last()._marker.render())
    assert "interrupted" in marker_text


async def next_turn_is_accepted(rig: Rig, app, pilot, store: Store, *, kept: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Send another prompt; its request must be accepted (remote) or reuse the cache (local).

    `kept`: the reply with the calls completed, so the history holds it (and
    its calls' results); else it is left out, and the model told it was stopped.
    """
    items = stored(store, app)
    assert_both_protocols_accept(items)
    if rig.local:
        n_tokens, committed, top = cache_state(rig.provider)
        # The committed tokens, and after a stop the reply's, kept uncommitted for Continue.
        assert committed <= n_tokens == top
        assert (n_tokens > committed) is not kept
        answered = rig.provider.last_job.prompt_tokens  # The prompt the calls answered.
        rig.provider.config.tool_choice = "auto"  # The tiny model then writes text...
        rig.provider.config.max_tokens = NEXT_REPLY_TOKENS  # ...enough of it to be a reply.
    else:
        rig.answer("Fine.")
    await send(pilot, "again")
    await wait_until(pilot, settled(app))
    assert app.last_outcome.state is ResponseState.COMPLETE
    if rig.local:
        assert len(set(cache_state(rig.provider))) == 1  # The stopped reply was rolled back.
        job = rig.provider.last_job
        assert (committed > 0) is kept  # A stopped reply's tokens were rolled back.
        if kept:  # The cached conversation is reused, up to the reply at least.
            assert answered <= job.reused <= committed < job.prompt_tokens
    else:
        assert rig.server is not None
        assert rig.server.requests[-1].refused is None
        body = json.dumps(rig.server.requests[-1].body)
        assert ("Let me see." in body) is kept and ("call_1" in body) is kept
        assert ("The user interrupted your previous reply" in body) is not kept


def stall_local_decode(provider: LocalProvider, after_tokens: int) -> threading.Event:
    """Hold the engine before the reply's `after_tokens`-th token until the turn is stopped."""
    llm = provider.engine.llm  # type: ignore[union-attr]
    original, counted, stalled = llm.eval, [0], threading.Event()

    def eval(tokens):  # type: ignore[no-untyped-def]
        if len(tokens) == 1:
            counted[0] += 1
            if counted[0] == after_tokens:
                halted = threading.Event()
                job = provider.last_job
                assert job is not None
                job.cancel.on_cancel(halted.set)
                stalled.set()
                assert halted.wait(20), "the turn was never stopped"
        return original(tokens)

    llm.eval = eval
    return stalled


async def stop_while_arguments_stream(rig: Rig, app, pilot, tool: str, prompt: str) -> str:  # type: ignore[no-untyped-def]
    """Send `prompt`; Esc while the model writes a call of `tool` ('{"text": "half a...').

    Remote: the wire server streams the call's arguments and ends mid-way;
    local: llama.cpp is held after 70 tokens of the grammar-written call.
    Returns the arguments the screen showed at the Esc; returns once settled.
    """
    if rig.local:
        await rig.provider.prepare()
        stalled = stall_local_decode(rig.provider, after_tokens=70)
    else:
        rig.calls(("call_1", tool, ['{"text": "hal', "f a"]), cut=True)
    await send(pilot, prompt)
    if rig.local:
        assert await asyncio.to_thread(stalled.wait, 20)
    await wait_until(pilot, lambda: bool(views(app)) and bool(views(app)[0].call.arguments))
    if not rig.local:
        await wait_until(pilot, lambda: views(app)[0].call.arguments == '{"text": "half a')
    shown = views(app)[0].call.arguments

    await pilot.press("escape")
    await wait_until(pilot, settled(app))
    return shown


def assert_cut_off(store: Store, app, shown: str) -> None:  # type: ignore[no-untyped-def]
    """The one call is cut off on screen and stored so: interrupted, its partial arguments kept
    (what was shown, and maybe a token more), no result."""
    assert statuses(app) == ["cut off"]
    assert_stopped_on_screen(app)
    items = stored(store, app)
    response = next(i for i in items if isinstance(i, ModelResponse))
    (call,) = response.tool_calls
    assert response.state is ResponseState.INTERRUPTED
    assert not call.complete and re.match(r'\{\s*"text"\s*:\s*"', call.arguments)
    assert call.arguments.startswith(shown)
    assert not [i for i in items if isinstance(i, ToolResult)]


async def stop_after_the_last_result(rig: Rig, app, pilot, prompt: str) -> tuple[list[Any], int]:  # type: ignore[no-untyped-def]
    """Send `prompt`; stop (as Esc does) the moment its reply's last tool result is shown.

    Returns the local model's generation jobs from then on and the remote
    server's request count before, to tell how many requests were made.
    """
    screen = app.chat
    handle = TurnView.on_event
    shown: list[ToolResult] = []

    async def stop_at_the_last(view: TurnView, event) -> None:  # type: ignore[no-untyped-def]
        await handle(view, event)
        if isinstance(event.payload, ToolResultAdded):
            shown.append(event.payload.result)
            if len(shown) == len(view.views[-1].response.tool_calls):
                screen.action_stop()  # As Esc does, at this very point.

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TurnView, "on_event", stop_at_the_last)
        requests_before = 0 if rig.local else len(rig.server.requests)  # type: ignore[union-attr]
        jobs: list[Any] = []
        if rig.local:
            await rig.provider.prepare()
            original = rig.provider.engine.generate
            rig.provider.engine.generate = lambda job: (jobs.append(job), original(job))[1]
        await send(pilot, prompt)
        await wait_until(pilot, settled(app))
    return jobs, requests_before
