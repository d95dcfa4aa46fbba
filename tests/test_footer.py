"""The key footer: the same keys from turn to turn, dimmed when unavailable, nothing leaked.

Also a canary of Textual's internals: `chatui/_textual/footer.py` uses the private
`FooterKey` and its `_disabled` flag, and these tests fail if Textual changes them.
"""

from __future__ import annotations

import gc
import weakref

from textual.widgets._footer import FooterKey

from chatui._textual.footer import KeyFooter
from chatui.app import ChatApp
from chatui.messages import ResponseState
from chatui.store import Store
from chatui.widgets.chat_message import AssistantMessage
from tests.support.app import make_app, send, settled, wait_until
from tests.support.scripted import STALL, ScriptedProvider, words


def footer_keys(app: ChatApp) -> dict[str, FooterKey]:
    return {key.key: key for key in app.screen.query_one(KeyFooter).query(FooterKey)}


async def test_a_turn_restyles_the_stop_key_without_rebuilding_the_footer(store: Store) -> None:
    provider = ScriptedProvider([*words("partial reply", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await pilot.pause()
        idle = footer_keys(app)
        assert "-disabled" in idle["escape"].classes
        assert "-disabled" in idle["ctrl+r"].classes
        assert "-disabled" not in idle["ctrl+n"].classes

        await send(pilot, "go")
        await provider.started.wait()
        await wait_until(pilot, lambda: app.chat.query(AssistantMessage).last().written == 2)
        await pilot.pause()
        streaming = footer_keys(app)
        assert "-disabled" not in streaming["escape"].classes

        await pilot.press("escape")
        await wait_until(pilot, settled(app))
        await pilot.pause()
        stopped = footer_keys(app)
        assert "-disabled" in stopped["escape"].classes
        assert "-disabled" not in stopped["ctrl+r"].classes  # The prompt can be recalled.
        assert all(stopped[k] is idle[k] is streaming[k] for k in idle)


async def test_keys_removed_by_a_rebuild_are_freed(store: Store) -> None:
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await pilot.pause()
        footer = app.screen.query_one(KeyFooter)
        old = [weakref.ref(key) for key in footer.query(FooterKey)]
        for _ in range(3):
            footer.call_later(footer.recompose)  # As a change of the keys shown does.
            await pilot.pause()
        gc.collect()
        assert old and all(ref() is None for ref in old)
        assert len(footer.query(FooterKey)) == len(old)


async def test_clicking_a_key_runs_its_binding(store: Store) -> None:
    provider = ScriptedProvider([*words("partial", end=None), STALL])
    app = make_app(store, provider)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await provider.last.stalled.wait()
        await wait_until(pilot, lambda: not footer_keys(app)["escape"]._disabled)
        await pilot.click(footer_keys(app)["escape"])
        await wait_until(pilot, settled(app))
        assert app.last_outcome.state is ResponseState.INTERRUPTED

        conversations = app.screen
        await pilot.click(footer_keys(app)["ctrl+o"])
        await wait_until(pilot, lambda: app.screen is not conversations)


async def test_the_footer_is_built_once_at_startup(store: Store, monkeypatch) -> None:
    """Its keys come once the screen's bindings are ready: one rebuild, not one per change."""
    rebuilds = 0
    recompose = KeyFooter.recompose

    async def counted(footer: KeyFooter) -> None:
        nonlocal rebuilds
        rebuilds += 1
        await recompose(footer)

    monkeypatch.setattr(KeyFooter, "recompose", counted)
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: "ctrl+q" in footer_keys(app))
        for _ in range(5):  # Whatever else the start asked for has run.
            await pilot.pause()
        assert rebuilds == 1
        assert "-disabled" in footer_keys(app)["escape"].classes  # Idle: nothing to stop.


async def test_a_rebuild_of_the_footer_never_holds_up_the_screen(store: Store) -> None:
    """Textual has the screen await a footer's rebuild after a refresh; it runs on the footer's.

    Awaited there, the new keys' mounting held back what the screen does next:
    every other widget's refresh (a reply's end that came just then missed its draw).
    """
    app = make_app(store, ScriptedProvider())
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: "ctrl+q" in footer_keys(app))
        footer = app.screen.query_one(KeyFooter)
        old = footer_keys(app)
        seen_next: list[dict[str, FooterKey]] = []
        # As `Footer.bindings_changed` does; then something else for after the same refresh.
        footer.call_later(footer.call_after_refresh, footer.recompose)
        footer.call_later(footer.call_after_refresh, lambda: seen_next.append(footer_keys(app)))
        footer.call_later(app.screen.refresh)
        await wait_until(pilot, lambda: bool(seen_next))
        assert seen_next == [old]  # The screen went on before the footer was rebuilt,
        await wait_until(pilot, lambda: footer_keys(app).get("ctrl+q") not in (None, old["ctrl+q"]))
        assert set(footer_keys(app)) == set(old)  # which it was, after.
