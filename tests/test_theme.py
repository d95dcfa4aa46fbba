"""The theme: the config's, or the one last picked in the command palette, kept across restarts."""

from __future__ import annotations

from textual.command import CommandList, CommandPalette

from chatui.app import ChatApp
from chatui.config import Config
from chatui.store import Store
from tests.support.app import wait_until
from tests.support.scripted import ScriptedProvider


def chat_app(store: Store, theme: str = "textual-dark") -> ChatApp:
    config = Config(system_prompt="", db_path=str(store.path), theme=theme)
    return ChatApp(config, store, ScriptedProvider([]))


def first_command(app: ChatApp) -> str:
    """The palette's first command as it reads, or "" while it has none."""
    commands = app.screen.query_one(CommandList)
    return str(commands.get_option_at_index(0).prompt) if commands.option_count else ""


async def pick_theme(app: ChatApp, name: str) -> None:
    """Pick `name` the user's way: the palette's "Theme" command, then the theme's name, Enter."""
    async with app.run_test() as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"theme")
        await wait_until(pilot, lambda: "theme" in first_command(app).lower())
        commands = app.screen
        await pilot.press("enter")  # The theme palette replaces the commands' palette.
        await wait_until(
            pilot, lambda: isinstance(app.screen, CommandPalette) and app.screen is not commands
        )
        await pilot.press(*name)
        await wait_until(pilot, lambda: first_command(app) == name)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == name)


async def theme_at_start(app: ChatApp) -> str:
    async with app.run_test() as pilot:
        await pilot.pause()
        return app.theme


async def test_the_theme_picked_in_the_palette_is_the_theme_after_a_restart(store: Store) -> None:
    await pick_theme(chat_app(store), "nord")

    assert await theme_at_start(chat_app(store)) == "nord"


async def test_the_configs_theme_alone_is_not_remembered(store: Store) -> None:
    """Only a pick is kept: with none, a theme changed in the config takes effect."""
    assert await theme_at_start(chat_app(store, theme="gruvbox")) == "gruvbox"

    assert await theme_at_start(chat_app(store, theme="nord")) == "nord"


async def test_a_theme_set_in_the_config_after_a_pick_wins(store: Store) -> None:
    """The latest intent wins: the pick over the config it replaced, a later config edit over it."""
    await pick_theme(chat_app(store, theme="gruvbox"), "nord")
    assert await theme_at_start(chat_app(store, theme="gruvbox")) == "nord"

    assert await theme_at_start(chat_app(store, theme="dracula")) == "dracula"


async def test_a_remembered_theme_that_no_longer_exists_falls_back_to_the_configs(
    store: Store,
) -> None:
    store.set_setting("theme", "gone-since")
    store.set_setting("theme.config", "gruvbox")
    app = chat_app(store, theme="gruvbox")

    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == "gruvbox"
        assert not app._notifications  # Quietly: nothing the user did is wrong.
