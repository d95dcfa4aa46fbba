"""Tool calling with the local model: the prompt, the grammar, and the default model under it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from chatui.cancel import CancelToken
from chatui.config import LocalConfig
from chatui.history import ChatMessage
from chatui.messages import ModelResponse, ResponseState, ToolResult
from chatui.providers.base import (
    ModelRequest,
    ProviderError,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolSpec,
)
from chatui.providers.local import provider as local_module
from chatui.providers.local.chat_format import GEMMA_TEMPLATE, ChatFormat
from chatui.providers.local.provider import LocalProvider
from chatui.providers.local.tool_grammar import MAX_CALLS, ToolGrammar, tool_grammar
from chatui.store import Store
from chatui.tools.registry import Tool, ToolRegistry
from chatui.tools.schema import parse_arguments, validate
from chatui.turn import TurnSettings
from tests.support.local import local_config
from tests.support.tiny_gguf import write_tiny_model
from tests.support.turns import make_turn, stored


def weather(city: str, unit: Literal["C", "F"] = "C", days: int = 1) -> str:
    """The weather forecast.

    Args:
        city: Where.
        unit: Celsius or Fahrenheit.
        days: How many days ahead.
    """
    return "sunny"


def ping() -> str:
    """Check that the tools work."""
    return "pong"


TOOLS = [Tool(weather).spec, Tool(ping).spec]


def test_the_prompt_lists_the_tools_and_the_call_format() -> None:
    chat_format = ChatFormat(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>")
    prompt = chat_format.render([ChatMessage("user", "Weather in Oslo?")], TOOLS)
    assert (
        '- weather(city: string, unit?: ["C", "F"], days?: integer): The weather forecast.\n'
        "    city: Where.\n    unit: Celsius or Fahrenheit.\n    days: How many days ahead.\n"
        "- ping(): Check that the tools work.\n" in prompt
    )
    assert '<tool_call>\n{"name": "the tool name", "arguments": {"argument": "value"}}' in prompt
    assert prompt.endswith("Weather in Oslo?<end_of_turn>\n<start_of_turn>model\n")
    assert "You can call" not in chat_format.render([ChatMessage("user", "Hi")])


async def stream(provider: LocalProvider, messages: list[ChatMessage], tools: list[ToolSpec]):  # type: ignore[no-untyped-def]
    request = ModelRequest(messages, CancelToken(), tools, "c")
    async with provider.stream(request) as events:
        return [event async for event in events]


@pytest.fixture
async def required(tiny_model: Path, tmp_path: Path):
    provider = LocalProvider(
        local_config(tiny_model, tool_choice="required", max_tokens=600), state_dir=None
    )
    await provider.prepare()
    yield provider
    await provider.close()


async def test_required_calls_follow_the_schemas_even_from_a_random_model(required) -> None:  # type: ignore[no-untyped-def]
    events = await stream(required, [ChatMessage("user", "Weather in Oslo?")], TOOLS)

    starts = [e for e in events if isinstance(e, ToolCallStart)]
    ended = {e.index for e in events if isinstance(e, ToolCallEnd)}
    assert 1 <= len(starts) <= MAX_CALLS and {s.index for s in starts} == ended
    assert not "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    schemas = {t.name: t.parameters for t in TOOLS}
    arguments: dict[int, str] = {}
    for event in events:
        if hasattr(event, "arguments"):
            arguments[event.index] = arguments.get(event.index, "") + event.arguments
    for start in starts:  # Random weights, yet every call names a tool and fits its schema.
        assert start.name in schemas
        validate(parse_arguments(arguments.get(start.index, "")), schemas[start.name])
    assert required.last_job.grammar is not None


async def test_a_reply_to_tool_results_and_auto_have_no_grammar(required) -> None:  # type: ignore[no-untyped-def]
    after_results = [
        ChatMessage("user", "Ping?"),
        ChatMessage("assistant", "", tool_calls=()),
        ChatMessage("tool", "pong", tool_call_id="c1", name="ping"),
    ]
    required.config.max_tokens = 8
    await stream(required, after_results, TOOLS)
    assert required.last_job.grammar is None and required.last_job.parse_tools

    required.config.tool_choice = "auto"
    await stream(required, [ChatMessage("user", "Ping?")], TOOLS)
    assert required.last_job.grammar is None and required.last_job.parse_tools
    assert "- ping()" in required.last_job.prompt_text

    required.config.tool_choice = "none"
    await stream(required, [ChatMessage("user", "Ping?")], TOOLS)
    assert not required.last_job.parse_tools and "ping" not in required.last_job.prompt_text


def test_a_grammar_that_does_not_compile_is_a_provider_error(required) -> None:  # type: ignore[no-untyped-def]
    vocab = required.engine.llm._model.vocab
    assert tool_grammar(TOOLS).sampler(vocab)  # The real one compiles.
    with pytest.raises(ProviderError, match="does not compile"):
        ToolGrammar("root ::= (").sampler(vocab)


async def test_the_default_model_calls_a_tool_under_the_grammar(
    store: Store,
    default_model_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bundled base model, the grammar, and a tool that records its invocations."""
    monkeypatch.setattr(local_module, "default_model_path", lambda: default_model_cache)
    invocations: list[str] = []

    def capital(country: Literal["France", "Italy", "Spain"]) -> str:
        """The capital city of a country.

        Args:
            country: The country.
        """
        invocations.append(country)
        return {"France": "Paris", "Italy": "Rome", "Spain": "Madrid"}[country]

    config = LocalConfig(n_threads=2, temperature=0.0, max_tokens=48, tool_choice="required")
    provider = LocalProvider(config, state_dir=None)
    await provider.prepare()
    try:
        turn, _ = make_turn(
            store,
            provider,
            tools=ToolRegistry([Tool(capital)]),
            settings=TurnSettings(system_prompt="Use the tools.", max_steps=2),
            prompt="What is the capital of France?",
        )
        outcome = await turn.run()
    finally:
        await provider.close()

    items = stored(store, turn)
    first, second = [i for i in items if isinstance(i, ModelResponse)]
    calls = [c for c in first.tool_calls if c.complete]
    answers = [i for i in items if isinstance(i, ToolResult) and i.call_id in {c.id for c in calls}]
    assert calls and [r.state for r in answers] == ["ok"] * len(calls)
    assert invocations == [parse_arguments(c.arguments)["country"] for c in calls]
    assert first.text.strip() == ""  # Nothing but calls, from the first token on.
    # Its reply to the results is free: a base model may copy the call format there, and
    # the step limit then ends the turn (its calls are answered, not run).
    assert second.state is ResponseState.COMPLETE
    assert outcome.state is ResponseState.COMPLETE or "tools.max_steps" in (outcome.error or "")


async def test_auto_offers_no_tools_to_a_model_without_a_template_of_its_own(
    tmp_path: Path,
) -> None:
    """Like the bundled base model, which copies the call format rather than calls."""
    model = write_tiny_model(tmp_path / "bare.gguf", chat_template=None)
    bare = LocalProvider(local_config(model, chat_template="", max_tokens=4), state_dir=None)
    await bare.prepare()
    try:
        await stream(bare, [ChatMessage("user", "Ping?")], TOOLS)
        assert not bare.knows_tools
        assert not bare.last_job.parse_tools and "ping" not in bare.last_job.prompt_text
        bare.config.tool_choice = "required"  # The grammar: how such a model calls tools.
        await stream(bare, [ChatMessage("user", "Ping?")], TOOLS)
        assert bare.last_job.grammar is not None and "- ping()" in bare.last_job.prompt_text
    finally:
        await bare.close()
