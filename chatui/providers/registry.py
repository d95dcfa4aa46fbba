"""Make a provider by name, list what the user can switch to, or say clearly why not."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from chatui.config import PROVIDERS, Config
from chatui.providers.lifecycle import Provider, ProviderError

DEFAULT_LOCAL_LABEL = "gemma-3-270m (default)"


@dataclass(frozen=True)
class ModelChoice:
    """A provider and a model the user can switch to.

    `model` is what `create_provider` takes ("" for the provider's configured
    model; a GGUF path for the local provider); `label` is how it is shown.
    """

    provider: str
    model: str = ""
    label: str = ""


def create_provider(config: Config, name: str = "", model: str = "") -> Provider:
    """The provider `name` (default: the configured one) with `model` (default: configured).

    Raises ProviderError with a message for the user.
    """
    name = name or config.provider
    model = model or (config.model if name == config.provider else "")
    if name == "local":
        from chatui.providers.local.provider import LocalProvider, cache_dir

        local = config.local
        if model:
            local = dataclasses.replace(local, model_path=model)
        return LocalProvider(local, state_dir=cache_dir() / "kv")
    if name == "openai":
        from chatui.providers.openai_chat import OpenAIProvider

        return OpenAIProvider(config.openai, model)
    if name == "anthropic":
        from chatui.providers.anthropic_messages import AnthropicProvider

        return AnthropicProvider(config.anthropic, model)
    raise ProviderError(
        f"The {name} provider is not available in this version of chatui. "
        f"Use one of {', '.join(PROVIDERS)} (see config.example.toml)."
    )


def configured_choices(config: Config) -> list[ModelChoice]:
    """Each provider with its configured model, the configured provider first."""
    models = {
        "local": config.local.model_path,
        "openai": config.openai.model,
        "anthropic": config.anthropic.model,
    }
    models[config.provider] = config.model or models[config.provider]
    order = [config.provider, *(name for name in PROVIDERS if name != config.provider)]
    choices = []
    for name in order:
        model = models[name]
        choices.append(ModelChoice(name, model, model_label(name, model)))
    return choices


def model_label(provider: str, model: str) -> str:
    """How a model is shown: a GGUF by its file name, the local default by its name."""
    if provider != "local":
        return model
    return Path(model).name if model else DEFAULT_LOCAL_LABEL
