"""Provider type → provider class. Adding a provider means one module and one line here."""

from __future__ import annotations

from forge.config import ProviderConfig
from serve.providers.sdk_base import SdkProvider


def make_provider(cfg: ProviderConfig) -> SdkProvider:
    """The plain provider class for a config entry (each SDK imported only when used)."""
    if cfg.type == "anthropic":
        from serve.providers.anthropic import AnthropicProvider

        return AnthropicProvider(cfg)
    from serve.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(cfg)
