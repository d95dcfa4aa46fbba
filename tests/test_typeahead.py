"""Keys typed while chatui starts: a prompt and its Enter typed at once are sent as typed.

Until Textual takes the terminal, the terminal's line discipline would turn
that Enter into a line feed (the app reads Ctrl+J: a new line in the prompt)
and echo the keys where the shell's prompt was (`chatui.typeahead`).
"""

from __future__ import annotations

import os
import sys
import termios
from pathlib import Path

from chatui.typeahead import as_typed
from tests.support import openai_wire
from tests.support.processes import OnPty
from tests.support.wire import WireServer


def test_a_prompt_typed_with_enter_before_the_first_frame_is_sent(tmp_path: Path) -> None:
    with WireServer(validate=openai_wire.validate) as server:
        server.play(openai_wire.reply("Hi there."))
        config = tmp_path / "config.toml"
        config.write_text(
            'provider = "openai"\n'
            f'db_path = "{tmp_path / "chat.sqlite3"}"\n'
            "[openai]\n"
            f'base_url = "{server.base_url}/v1"\n'
            'api_key = "sk-test-not-a-key-0000"\n'
            'model = "gpt-4o-mini"\n'
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))},
            "CHATUI_CONFIG": str(config),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "TERM": "xterm-256color",
        }
        app = OnPty([sys.executable, "-m", "chatui"], env)
        try:
            before = termios.tcgetattr(app.fd)
            app.write(b"hello\r")  # Typed at once: the terminal is still in its cooked mode.
            server.wait_for_request(1, timeout=20)  # Not a new line in the prompt: sent.
            messages = server.requests[0].body["messages"]
            assert messages[-1] == {"role": "user", "content": "hello"}
            app.wait_for(lambda: "Hi there." in app.output, timeout=20)
            app.write(b"\x11")  # Ctrl+Q
            assert app.exit_code(20) == 0
            after = termios.tcgetattr(app.fd)
        finally:
            app.close()
    assert after[:4] == before[:4]  # The terminal as it was: echo, lines, CR as line feed.
    assert after[3] & termios.ECHO and after[3] & termios.ICANON and after[0] & termios.ICRNL


def test_only_what_was_typed_before_has_its_line_feeds_made_enters() -> None:
    assert as_typed(b"hi\nthere\n", 3) == b"hi\rthere\n"  # A later one is a real Ctrl+J.
    assert as_typed(b"a\nb", 0) == b"a\nb"
    assert as_typed(b"a\n", 10) == b"a\r"
