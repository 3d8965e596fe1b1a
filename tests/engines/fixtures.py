"""Fixtures of a tiny model and LoRA adapters built here, as a pytest plugin: the root
conftest loads it, and so does the vLLM venv's run (``scripts/test-vllm.sh``), which
stops conftest lookup at tests/engines because the platform's fixtures need packages
that venv does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.models.tiny import TinyModelSpec, build_tiny_adapter, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(corpus_files=40))


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Two adapters for the tiny model, and one for a model of another shape."""
    root = tmp_path_factory.mktemp("adapters")
    other_base = build_tiny_model(
        root / "other-base", TinyModelSpec(corpus_files=5, hidden_size=128, heads=2, kv_heads=1)
    )
    return {
        "support": build_tiny_adapter(tiny_model, root / "support", seed=1),
        "legal": build_tiny_adapter(tiny_model, root / "legal", seed=2, rank=4),
        "mismatched": build_tiny_adapter(other_base, root / "mismatched", seed=3),
    }
