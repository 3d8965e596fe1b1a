"""Every provider type, described once for the shared contract suite: how to reach its
fake, which model names trigger which scenario, and what it can do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCENARIOS = ("error-429", "error-500", "hang", "midstream-error", "truncated")


@dataclass(frozen=True)
class ProviderCase:
    name: str  # provider name in the gateway config, and the public model prefix
    type: str
    fake: str  # the pytest fixture serving its fake
    key_env: str | None
    ok_model: str
    url_attr: str = "url"
    supports: frozenset[str] = field(default_factory=lambda: frozenset({"tools", "image"}))
    extra: dict[str, Any] = field(default_factory=dict)

    def provider_config(self, fake: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "base_url": getattr(fake, self.url_attr),
            "api_key_env": self.key_env,
            "timeout_s": 1.0,
            **self.extra,
        }

    def models(self) -> list[dict[str, Any]]:
        out = [{"name": f"{self.name}-ok", "provider": self.name, "model": self.ok_model}]
        out += [{"name": f"{self.name}-{s}", "provider": self.name, "model": s} for s in SCENARIOS]
        return out


CASES = [
    ProviderCase(
        "openai",
        "openai_compatible",
        "fake_openai",
        "FAKE_UPSTREAM_KEY",
        "gpt-fake",
        url_attr="base_url",
    ),
    ProviderCase(
        "azure",
        "azure",
        "fake_openai",
        "FAKE_UPSTREAM_KEY",
        "gpt-fake",
        extra={"api_version": "2024-10-21"},
    ),
    ProviderCase("anthropic", "anthropic", "fake_anthropic", "FAKE_ANTHROPIC_KEY", "claude-fake"),
    ProviderCase("llamacpp", "llamacpp", "fake_llamacpp", None, "qwen", url_attr="base_url"),
    ProviderCase("tgi", "hf_tgi", "fake_tgi", "FAKE_TGI_KEY", "tgi", url_attr="base_url"),
    ProviderCase("ollama", "ollama", "fake_ollama", None, "llava"),
    ProviderCase("gemini", "gemini", "fake_gemini", "FAKE_GEMINI_KEY", "gemini-2.5-flash"),
]
