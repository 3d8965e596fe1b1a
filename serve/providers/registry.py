"""Provider type → provider class. Adding a provider means one module and one line here."""

from __future__ import annotations

import importlib

from forge.adapters import AdapterLookup
from forge.config import GENERATIVE_TYPES, ProviderConfig
from forge.protocol.exchange import Provider

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
    "vllm": "serve.models.server:ModelServerProvider",
    "transformers_embedding": "serve.models.embedding_server:EmbeddingServerProvider",
}


def make_provider(cfg: ProviderConfig, adapter_lookup: AdapterLookup | None = None) -> Provider:
    """The plain provider class for a config entry (each SDK imported only when used);
    self-hosted generative models get ``adapter_lookup`` to find LoRA adapters by name."""
    module, _, name = PROVIDERS[cfg.type].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if cfg.type in GENERATIVE_TYPES:
        return cls(cfg, adapter_lookup=adapter_lookup)
    return cls(cfg)
