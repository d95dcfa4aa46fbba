"""Both remote providers set up from the config file and from the environment, end to end.

`load_config` → `create_provider` → a turn against the loopback server: the
request carries the key from where it was set, and goes to that `base_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chatui.config import load_config
from chatui.messages import ResponseState
from chatui.providers.registry import create_provider
from chatui.store import Store
from tests.support import anthropic_wire as aw
from tests.support import openai_wire as ow
from tests.support.remote import SECRET, settings
from tests.support.turns import make_turn
from tests.support.wire import WireServer


@pytest.fixture
def server() -> Iterator[WireServer]:
    with WireServer() as wire:
        yield wire


def url_of(provider: str, server: WireServer) -> str:
    return f"{server.base_url}/v1" if provider == "openai" else server.base_url


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("source", ["file", "environment"])
async def test_a_remote_provider_works_from_the_file_or_the_environment(
    server: WireServer, store: Store, tmp_path: Path, provider: str, source: str
) -> None:
    server.play(ow.reply("Hi.") if provider == "openai" else aw.reply("Hi."))
    path = tmp_path / "config.toml"
    prefix = provider.upper()
    if source == "file":
        path.write_text(
            f'provider = "{provider}"\nmodel = "m-1"\n[{provider}]\n'
            f'api_key = "{SECRET}"\nbase_url = "{url_of(provider, server)}"\n'
        )
        env = {}
    else:
        path.write_text(f'provider = "{provider}"\nmodel = "m-1"\n')
        env = {f"{prefix}_API_KEY": SECRET, f"{prefix}_BASE_URL": url_of(provider, server)}
    config = load_config(path, env=env)
    remote = create_provider(config)

    turn, _ = make_turn(store, remote, settings=settings())
    assert (await turn.run()).state is ResponseState.COMPLETE

    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.body["model"] == "m-1"
    assert SECRET in config.secrets()  # So the session redacts it.
    await remote.close()
