"""Errors of both remote providers that need more than a scripted server.

A host that cannot be resolved (the resolver is made to fail the way an
offline machine's does: no network is needed), and a key-shaped secret that
the server echoes back in every kind of error: it never reaches the screen,
the store or the error text.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from chatui.config import AnthropicConfig, OpenAIConfig
from chatui.messages import ResponseState
from chatui.providers.anthropic_messages import AnthropicProvider
from chatui.providers.base import RetryWait
from chatui.providers.openai_chat import OpenAIProvider
from chatui.providers.remote import RemoteProvider
from chatui.store import Store
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.app import make_app, screen_text, send, settled, wait_until
from tests.support.remote import PROVIDERS, SECRET, assert_no_secret, key_runs, settings
from tests.support.turns import make_turn
from tests.support.wire import DROP, Error, Raw, Send, WireServer

UNKNOWN_HOST = "llm.chatui.invalid"  # RFC 6761: never resolves.


@pytest.mark.parametrize("provider_name", PROVIDERS)
@pytest.mark.parametrize(
    ("code", "message"),
    [
        (socket.EAI_NONAME, "Name or service not known"),
        (socket.EAI_AGAIN, "Temporary failure in name resolution"),  # Offline.
    ],
)
async def test_a_host_that_cannot_be_resolved_is_said_so_and_not_retried(
    store: Store, monkeypatch: pytest.MonkeyPatch, provider_name: str, code: int, message: str
) -> None:
    real = socket.getaddrinfo
    asked: list[str] = []

    def resolve(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in (UNKNOWN_HOST, UNKNOWN_HOST.encode()):  # anyio passes it IDNA-encoded.
            asked.append(UNKNOWN_HOST)
            raise socket.gaierror(code, message)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    provider = PROVIDERS[provider_name](f"http://{UNKNOWN_HOST}:8000")
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    assert f"could not resolve {UNKNOWN_HOST} (DNS)" in outcome.error
    assert "check base_url" in outcome.error  # The host is base_url's: it may be mistyped.
    assert asked == [UNKNOWN_HOST]  # Once: a name that does not resolve will not next time.
    assert not [e for e in sink.events if isinstance(e.payload, RetryWait)]
    assert_no_secret(store, outcome.error)
    await provider.close()


OWN_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


def own_api(provider_name: str) -> RemoteProvider:
    """The provider on its company's own API: no base_url set."""
    if provider_name == "openai":
        return OpenAIProvider(OpenAIConfig(api_key=SECRET, model="wire-model"))
    return AnthropicProvider(AnthropicConfig(api_key=SECRET, model="wire-model"))


@pytest.mark.parametrize("provider_name", PROVIDERS)
async def test_an_unresolvable_api_host_is_named_and_base_url_is_not_blamed_when_none_is_set(
    store: Store, monkeypatch: pytest.MonkeyPatch, provider_name: str
) -> None:
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):  # Straight to the resolver.
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.lower(), raising=False)
    asked: list[str] = []

    def offline(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(host.decode() if isinstance(host, bytes) else host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)  # Every name fails: no network used.
    provider = own_api(provider_name)
    turn, sink = make_turn(store, provider, settings=settings())

    outcome = await turn.run()

    assert outcome.state is ResponseState.FAILED
    host = OWN_HOSTS[provider_name]
    assert asked == [host]
    assert f"could not resolve {host} (DNS)" in outcome.error
    assert "base_url" not in outcome.error and "its API" not in outcome.error
    assert "network" in outcome.error  # What the user can check instead.
    assert not [e for e in sink.events if isinstance(e.payload, RetryWait)]
    assert_no_secret(store, outcome.error)
    await provider.close()


def echoed(provider_name: str) -> dict[str, list]:  # type: ignore[type-arg]
    """Error replies of each kind, each carrying the key back as servers sometimes do."""
    leak = f"bad key {SECRET}"
    # A proxy's error page that echoes the header, with the key across the shown part's end
    # (its first 300 characters): the key starts at the 270th.
    page = f"<html><body>{'.' * 231}<pre>Authorization: Bearer {SECRET}</pre></body></html>"
    if provider_name == "openai":
        body = {"error": {"message": leak, "type": "invalid_request_error"}}
        return {
            "400": [Error(400, body)],
            "401": [Error(401, body)],
            "404": [Error(404, body)],
            "500": [Error(500, body, {"retry-after": "0"})],  # Retried at once, twice.
            "text-body": [Error(403, leak)],
            "cut-page": [Error(401, page)],
            "not-json": [*ow.text("Part"), Raw(f"data: {{{leak}\n\n".encode())],
            "dropped": [*ow.text("Part"), DROP],
        }
    body = aw.error_body("invalid_request_error", leak)
    return {
        "400": [Error(400, body)],
        "401": [Error(401, aw.error_body("authentication_error", leak))],
        "404": [Error(404, aw.error_body("not_found_error", leak))],
        "529": [Error(529, aw.error_body("overloaded_error", leak), {"retry-after": "3600"})],
        "text-body": [Error(403, leak)],
        "cut-page": [Error(401, page)],
        "error-event": [*aw.start(), Send(aw.error_body("api_error", leak), event="error")],
        "dropped": [*aw.start(), *aw.text_block(0, "Part", stop=False), DROP],
    }


CASES = [(name, case) for name in PROVIDERS for case in echoed(name)]


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


@pytest.mark.parametrize(("provider_name", "case"), CASES, ids=[f"{p}-{c}" for p, c in CASES])
async def test_an_echoed_key_never_reaches_the_screen_or_the_store(
    server: WireServer, store: Store, provider_name: str, case: str
) -> None:
    steps = echoed(provider_name)[case]
    server.play(steps, steps, steps)  # Enough for any retries.
    provider = PROVIDERS[provider_name](server.base_url)
    app = make_app(store, provider)
    async with app.run_test(size=(200, 50)) as pilot:
        await send(pilot, "hello")
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.FAILED
        shown = screen_text(app)
        assert "Error" in shown  # The failure is on screen,
        assert key_runs(shown) == []  # without the key, whole or in part.
        for toast in app._notifications:
            assert SECRET not in str(toast.message)
    assert_no_secret(store, app.last_outcome.error)
    await provider.close()
