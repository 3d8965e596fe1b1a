"""Provider type → provider class. Adding a provider means one module and one line here."""

from __future__ import annotations

import importlib

from forge.config import ProviderConfig
from serve.providers.base import Provider

PROVIDERS = {
    "openai": "serve.providers.openai_compat:OpenAICompatProvider",
    "azure": "serve.providers.openai_compat:OpenAICompatProvider",
    "openai_compatible": "serve.providers.openai_compat:OpenAICompatProvider",
    "llamacpp": "serve.providers.llamacpp:LlamaCppProvider",
    "hf_tgi": "serve.providers.hf_tgi:TgiProvider",
    "anthropic": "serve.providers.anthropic:AnthropicProvider",
    "gemini": "serve.providers.gemini:GeminiProvider",
    "ollama": "serve.providers.ollama:OllamaProvider",
    "transformers": "serve.models.server:ModelServerProvider",
    "transformers_embedding": "serve.models.embedding_server:EmbeddingServerProvider",
}


def make_provider(cfg: ProviderConfig) -> Provider:
    """The plain provider class for a config entry (each SDK imported only when used)."""
    module, _, name = PROVIDERS[cfg.type].partition(":")
    return getattr(importlib.import_module(module), name)(cfg)
