"""Make the configured provider, or say clearly why there is none."""

from __future__ import annotations

from chatui.config import Config
from chatui.providers.base import Provider, ProviderError


def create_provider(config: Config) -> Provider:
    """The provider `config` selects; raises ProviderError with a message for the user."""
    raise ProviderError(
        f"The {config.provider} provider is not available in this version of chatui. "
        "Set `provider` in the config file (see config.example.toml) once it is."
    )
