"""The app in a new user's hands: keys typed fast in its dialogs, and its start.

Keys "in one read" are posted all at once, as a terminal read delivers them
(a fast typist, a paste read as keys, tmux): nothing is awaited between them.
"""

from __future__ import annotations

from textual import events
from textual.widgets import TextArea

from chatui.app import ChatApp
from chatui.screens.system_prompt import SystemPromptDialog
from chatui.store import Store
from tests.support.app import make_app, wait_until
from tests.support.scripted import ScriptedProvider, words

SIZE = (80, 24)


def type_in_one_read(app: ChatApp, *keys: str) -> None:
    """Post `keys` as one terminal read delivers them: all at once, nothing awaited between."""
    for name in keys:
        char = " " if name == "space" else name if len(name) == 1 else None
        app.post_message(events.Key(name, char))


async def test_text_typed_just_before_ctrl_s_is_in_the_saved_system_prompt(store: Store) -> None:
    app = make_app(store, ScriptedProvider(words("Hi.")))
    app.session.config.system_prompt = "Be brief."
    async with app.run_test(size=SIZE) as pilot:
        app.call_later(app.chat.action_system_prompt)
        await wait_until(pilot, lambda: isinstance(app.screen, SystemPromptDialog))
        dialog = app.screen
        await wait_until(pilot, lambda: dialog.query_one(TextArea).has_focus)
        keys = ["space", *"Speak", "space", *"like", "space", *"a", "space", *"pirate"]
        type_in_one_read(app, *keys, "ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SystemPromptDialog))
        conversation = app.chat.conversation
        assert conversation.system_prompt == "Be brief. Speak like a pirate"
        stored = store.load_conversation(conversation.id)
        assert stored.system_prompt == "Be brief. Speak like a pirate"
