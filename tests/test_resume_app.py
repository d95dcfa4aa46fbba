"""`chatui --continue` and `chatui --resume ID` in the app: that conversation opens at startup."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from chatui import cli
from chatui.messages import ModelResponse, ResponseState, UserPrompt
from chatui.store import Store
from chatui.widgets.chat_message import UserMessage
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import ScriptedProvider, words


def stored_exchange(store: Store, prompt: str, reply: str) -> str:
    """A conversation holding one prompt and its complete reply; its id."""
    conversation = store.create_conversation()
    store.save_item(conversation.id, UserPrompt(prompt))
    response = ModelResponse("scripted", "script-1", state=ResponseState.COMPLETE)
    response.append_text(reply)
    store.save_item(conversation.id, response)
    store.release_conversation(conversation.id)
    return conversation.id


async def test_the_app_opens_the_resumed_conversation_and_goes_on_in_it(store: Store) -> None:
    earlier = stored_exchange(store, "The earlier question", "The earlier answer")
    stored_exchange(store, "A later one", "Its answer")
    assert store.claim_conversation(earlier)  # As `chatui --resume` claims it, before the UI.
    app = make_app(store, ScriptedProvider(words("Going on.")), resume=earlier)
    async with app.run_test() as pilot:
        assert app.chat.conversation.id == earlier
        prompts = [view.item_id for view in app.chat.query(UserMessage)]
        assert prompts == [store.load_conversation(earlier).items[0].id]

        await send(pilot, "And then?")
        await wait_until(pilot, settled(app))

    items = store.load_conversation(earlier).items
    assert [i.text for i in items if isinstance(i, UserPrompt)] == [
        "The earlier question",
        "And then?",
    ]


@pytest.mark.parametrize(
    ("flags", "which"), [(["--continue"], "later"), (["--resume", "EARLIER"], "earlier")]
)
def test_continue_and_resume_hand_the_app_that_conversation_claimed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, flags: list[str], which: str
) -> None:
    db = tmp_path / "chat.sqlite3"
    setup = Store(db)
    ids = {
        "earlier": stored_exchange(setup, "The earlier question", "The earlier answer"),
        "later": stored_exchange(setup, "A later one", "Its answer"),
    }
    setup.create_conversation()  # Newer and empty: not "the last conversation".
    setup.close()
    handed: dict[str, Any] = {}

    def run_app(config: Any, store: Store, provider: Any, **options: Any) -> int:
        with sqlite3.connect(db) as other:
            [(owner,)] = other.execute(
                "SELECT owner FROM conversations WHERE id = ?", (options["resume"],)
            )
        handed.update(options, claimed=owner == store.instance_id)
        store.close()
        return 0

    monkeypatch.setattr(cli, "run_app", run_app)
    monkeypatch.setattr(cli, "terminal_problem", lambda: None)
    monkeypatch.setattr(cli, "_prompt_piped_in", lambda: False)
    flags = [ids["earlier"] if flag == "EARLIER" else flag for flag in flags]

    config = tmp_path / "config.toml"
    config.write_text("")

    assert cli.main(["--db", str(db), "--config", str(config), *flags]) == 0

    assert handed["resume"] == ids[which] and handed["claimed"]
