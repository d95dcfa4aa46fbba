"""Make the configured provider, or say clearly why there is none."""

from __future__ import annotations

import dataclasses

from chatui.config import Config
from chatui.providers.base import Provider, ProviderError


def create_provider(config: Config) -> Provider:
    """The provider `config` selects; raises ProviderError with a message for the user."""
    if config.provider == "local":
        from chatui.providers.local.provider import LocalProvider, cache_dir

        local = config.local
        if config.model:
            local = dataclasses.replace(local, model_path=config.model)
        return LocalProvider(local, state_dir=cache_dir() / "kv")
    if config.provider == "openai":
        from chatui.providers.openai_chat import OpenAIProvider

        return OpenAIProvider(config.openai, config.model)
    if config.provider == "anthropic":
        from chatui.providers.anthropic_messages import AnthropicProvider

        return AnthropicProvider(config.anthropic, config.model)
    raise ProviderError(
        f"The {config.provider} provider is not available in this version of chatui. "
        'Use provider = "local" in the config file (see config.example.toml).'
    )
