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

    It also drops the watchers of removed keys: `Footer` binds each new key to
    its `compact` reactive and forgets the old ones only when `compact` changes,
    which here it never does, so every rebuild kept dead widgets alive.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: list[tuple[str, str, str]] = []  # What the keys were composed from.

    def compose(self) -> ComposeResult:
        self._shown = list(_shown_bindings(self.screen))
        yield from super().compose()

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = _shown_bindings(screen)
        keys = list(self.query_children(FooterKey))
        if list(shown) != self._shown or not keys:
            super().bindings_changed(screen)
            return
        for key in keys:  # The same keys: only whether each is enabled may differ.
            disabled = not shown.get((key.key, key.description, key.action), True)
            if key._disabled != disabled:
                key._disabled = disabled  # What a click on the key checks.
                key.set_class(disabled, "-disabled")

    async def recompose(self) -> None:
        await super().recompose()
        self.mutate_reactive(Footer.compact)  # Prunes the watchers of removed keys.


def _shown_bindings(screen: Screen[Any]) -> dict[tuple[str, str, str], bool]:
    """The bindings the footer shows, (key, description, action) → enabled, in order."""
    return {
        (binding.key, binding.description, binding.action): enabled
        for _node, binding, enabled, _tooltip in screen.active_bindings.values()
        if binding.show
    }
