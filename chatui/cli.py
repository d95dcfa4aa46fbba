"""The `chatui` command: flags, config, store, provider, then the app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatui import __version__
from chatui.config import PROVIDERS, ConfigError, load_config
from chatui.providers.base import ProviderError
from chatui.providers.registry import create_provider
from chatui.store import Store, StoreError, default_db_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chatui", description=__doc__)
    parser.add_argument("--config", type=Path, help="config file (default: user config dir)")
    parser.add_argument("--provider", choices=PROVIDERS, help="model provider to use")
    parser.add_argument("--model", help="model name (or GGUF path for the local provider)")
    parser.add_argument("--db", type=Path, help="conversation database (env: CHATUI_DB)")
    parser.add_argument("--version", action="version", version=f"chatui {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(
            args.config,
            overrides={
                "provider": args.provider,
                "model": args.model,
                "db_path": str(args.db) if args.db else None,
            },
        )
    except ConfigError as error:
        print(f"chatui: config error: {error}", file=sys.stderr)
        return 2
    try:
        store = Store(Path(config.db_path).expanduser() if config.db_path else default_db_path())
    except StoreError as error:
        print(f"chatui: {error}", file=sys.stderr)
        return 2

    from chatui.app import ChatApp  # Textual is slow to import; errors above come first.

    provider, problem = None, None
    try:
        provider = create_provider(config)
    except ProviderError as error:
        problem = str(error)
    try:
        ChatApp(config, store, provider, provider_error=problem).run()
    finally:
        store.close()
    return 0
