"""Fixtures for the engine conformance suite: a tiny model and LoRA adapters built here.

Kept free of Ray and of the rest of the platform so that the suite also runs in the
separate vLLM venv (``scripts/test-vllm.sh``, which stops conftest lookup at this folder).
"""

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
