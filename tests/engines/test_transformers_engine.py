"""Engine conformance for the transformers engine, on the tiny local model (CPU)."""

from __future__ import annotations

import asyncio

import pytest

from forge.errors import ServiceUnavailable
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.engines.conformance import EngineConformance, SeedConformance, chat, run

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
async def engine(tiny_model):
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, num_blocks=128, page_size=32, max_batch_tokens=512)
    await eng.start()
    yield eng
    await eng.stop()


class TestTransformersEngine(EngineConformance, SeedConformance):
    pass


async def test_a_dead_engine_fails_requests_with_503_instead_of_hanging(tmp_path):
    from serve.models.transformers_engine import TransformersEngine

    path = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=10))
    eng = TransformersEngine(path, num_blocks=32, page_size=32, max_batch_tokens=256)
    await eng.start()
    assert eng.healthy()
    eng._managers[None].stop(block=True)  # what a crash or OOM leaves: no loop running
    assert not eng.healthy() and not eng.stats().healthy
    with pytest.raises(ServiceUnavailable) as err:
        await asyncio.wait_for(run(eng, chat(eng, "hi"), max_tokens=4), 15)
    assert err.value.status_code == 503
    await eng.stop()
