"""Engine conformance for the transformers engine, on the tiny local model (CPU)."""

from __future__ import annotations

import asyncio

import pytest

from forge.errors import ServiceUnavailable
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.engines.conformance import (
    EngineConformance,
    JoinConformance,
    SeedConformance,
    chat,
    run,
)

pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["padded", "continuous"])
async def engine(request, tiny_model):
    """Both batching loops: our padded batch (the CPU default) and transformers' own."""
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching=request.param)
    await eng.start()
    yield eng
    await eng.stop()


class TestTransformersEngine(EngineConformance, SeedConformance, JoinConformance):
    pass


@pytest.mark.parametrize("batching", ["padded", "continuous"])
async def test_a_dead_engine_fails_requests_with_503_instead_of_hanging(tmp_path, batching):
    from serve.models.transformers_engine import TransformersEngine

    path = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=10))
    eng = TransformersEngine(path, batching=batching, num_blocks=32, max_batch_tokens=256)
    await eng.start()
    assert eng.healthy()
    eng._managers[None].stop(block=True)  # what a crash or OOM leaves: no loop running
    assert not eng.healthy() and not eng.stats().healthy
    with pytest.raises(ServiceUnavailable) as err:
        await asyncio.wait_for(run(eng, chat(eng, "hi"), max_tokens=4), 15)
    assert err.value.status_code == 503
    await eng.stop()
