"""One layout per frame: the chat screen's compositor trusts the map its layout has just built."""

from __future__ import annotations

import pytest
from apphelpers import make_app, send, settled, wait_until
from scripted import ScriptedProvider
from textual._compositor import Compositor

from chatui.providers.base import StreamEnd, TextDelta
from chatui.screens.fresh_compositor import FreshMapCompositor
from chatui.store import Store


async def test_a_streaming_reply_lays_the_screen_out_once_per_layout(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    layouts: list[str] = []  # "reflow" per layout, "full" per full arrangement of the screen.
    reflow, arrange = Compositor.reflow, Compositor._arrange_root

    def counting_reflow(self, parent, size):  # type: ignore[no-untyped-def]
        layouts.append("reflow")
        return reflow(self, parent, size)

    def counting_arrange(self, root, size, visible_only=True):  # type: ignore[no-untyped-def]
        if not visible_only:
            layouts.append("full")
        return arrange(self, root, size, visible_only)

    monkeypatch.setattr(Compositor, "reflow", counting_reflow)
    monkeypatch.setattr(Compositor, "_arrange_root", counting_arrange)
    # New blocks keep appearing below the view: each one is marked for redraw before
    # it has a place on screen, which is what left Textual's full map flagged as stale.
    script = [
        TextDelta(f"Paragraph {n}, long enough to wrap on a narrow screen.\n\n") for n in range(40)
    ]
    app = make_app(store, ScriptedProvider([*script, StreamEnd("stop")], pace=0.004))
    async with app.run_test(size=(50, 16)) as pilot:
        assert isinstance(app.chat._compositor, FreshMapCompositor)
        await pilot.pause()
        layouts.clear()
        await send(pilot, "go on")
        await wait_until(pilot, settled(app))
        await pilot.pause()

        reflows = layouts.count("reflow")
        # Laid out over several frames (how many depends on the machine's pace, so only a
        # few are required: the claim is the equality below, in every one of them).
        assert reflows >= 3
        assert layouts.count("full") == reflows  # No layout done twice.

        compositor = app.chat._compositor
        fresh, _ = arrange(compositor, app.chat, compositor.size, False)
        assert compositor.full_map == fresh  # The map trusted is the current one.
