"""Textual's key footer, made cheap to update and without its leak."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class KeyFooter(Footer):
    """The footer of key bindings.

    Textual's `Footer` rebuilds all its keys whenever the bindings are
    refreshed, which for the chat screen is at every start and end of a turn:
    new widgets to style, lay out and render, in the very frames where the user
    is likely to press Esc. This footer rebuilds only when the keys shown
    change; when only some became enabled or disabled, it restyles those keys.

    Textual's `Footer` composes no keys until its screen's bindings are ready,
    then asks for a recompose at each change of bindings until it has keys: at
    startup that was four recomposes in a row (each about 10 ms of the frames
    just after the first). This one asks for one at a time.

    It also drops the watchers of removed keys: `Footer` binds each new key to
    its `compact` reactive and forgets the old ones only when `compact` changes,
    which here it never does, so every rebuild kept dead widgets alive.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[tuple[str, str, str]] = []  # What the keys were composed from.
        self._recomposing = False  # A recompose is asked for and has not run yet.

    def compose(self) -> ComposeResult:
        self._recomposing = False
        ready = self._bindings_ready  # Until then, `Footer` composes no keys.
        self._shown = list(_shown_bindings(self.screen)) if ready else []
        yield from super().compose()

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = _shown_bindings(screen)
        keys = list(self.query_children(FooterKey))
        if list(shown) != self._shown or not keys:
            if not self._recomposing:  # It will show the bindings as they are when it runs.
                self._recomposing = bool(
                    screen.app.app_focus and self.is_attached and screen is self.screen
                )
                super().bindings_changed(screen)
            return
        for key in keys:  # The same keys: only whether each is enabled may differ.
            disabled = not shown.get((key.key, key.description, key.action), True)
            if key._disabled != disabled:
                key._disabled = disabled  # What a click on the key checks.
                key.set_class(disabled, "-disabled")

    async def recompose(self) -> None:
        """Rebuild the keys on the footer's own message queue, not the caller's.

        Textual calls this after the screen's next refresh and waits for it there,
        on the screen's queue: while the new keys mount (tens of turns of the
        loop), no other widget's refresh reaches the screen, and the end of a
        reply that lands just then missed its early draw.
        """
        self.call_later(self._rebuild)

    async def _rebuild(self) -> None:
        await super().recompose()
        self.mutate_reactive(Footer.compact)  # Prunes the watchers of removed keys.


def _shown_bindings(screen: Screen[Any]) -> dict[tuple[str, str, str], bool]:
    """The bindings the footer shows, (key, description, action) → enabled, in order."""
    return {
        (binding.key, binding.description, binding.action): enabled
        for _node, binding, enabled, _tooltip in screen.active_bindings.values()
        if binding.show
    }
