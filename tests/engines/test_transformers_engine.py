"""Engine conformance for the transformers engine, on the tiny local model (CPU)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from forge.errors import ServiceUnavailable
from serve.models.engine import SamplingParams
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.engines.conformance import (
    EngineConformance,
    JoinConformance,
    SeedConformance,
    chat,
    run,
)

pytest.importorskip("transformers")


@contextlib.asynccontextmanager
async def two_adapters(model, adapter_dirs, batching: str):
    """An engine with adapters `support` and `legal` loaded: it, a prompt, the base answer."""
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(model, batching=batching)
    await eng.start()
    try:
        prompt = chat(eng, "def handler(event):")
        base = (await run(eng, prompt, max_tokens=10))[0]
        await eng.load_adapter("support", adapter_dirs["support"])
        await eng.load_adapter("legal", adapter_dirs["legal"])
        yield eng, prompt, base
    finally:
        await eng.stop()


@pytest.fixture(scope="module", params=["slots", "padded", "continuous"])
async def engine(request, tiny_model):
    """Every batching loop: our slot batch (the default for Llama-family models), our
    padded batch (any model) and transformers' own."""
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching=request.param)
    await eng.start()
    yield eng
    await eng.stop()


class TestTransformersEngine(EngineConformance, SeedConformance, JoinConformance):
    pass


@pytest.mark.parametrize("batching", ["padded", "continuous"])
async def test_a_dead_engine_fails_requests_with_503_instead_of_hanging(
    tmp_path, batching, adapter_dirs
):
    from serve.models.transformers_engine import TransformersEngine

    path = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=10))
    eng = TransformersEngine(path, batching=batching, num_blocks=32, max_batch_tokens=256)
    await eng.start()
    assert eng.healthy()
    eng._batch.stop(block=True)  # what a crash or OOM leaves: no loop running
    assert not eng.healthy() and not eng.stats().healthy
    with pytest.raises(ServiceUnavailable) as err:
        await asyncio.wait_for(run(eng, chat(eng, "hi"), max_tokens=4), 15)
    assert err.value.status_code == 503
    if batching == "padded":  # adapters load on the loop's thread: none to load them
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(eng.load_adapter("a", adapter_dirs["support"]), 15)
    await eng.stop()


async def test_the_padded_batch_mixes_adapters_and_survives_their_unloading(
    tiny_model, adapter_dirs
):
    """Base and adapter requests share one batch (each row through its own adapter),
    and adapters come and go in any order without touching the others' answers."""
    async with two_adapters(tiny_model, adapter_dirs, "padded") as (eng, prompt, base):
        legal = (await run(eng, prompt, "legal", max_tokens=10))[0]
        batcher = eng._batch
        widest = 0

        async def watch() -> None:
            nonlocal widest
            while True:
                widest = max(widest, batcher.running)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        together = await asyncio.gather(
            *(run(eng, prompt, a, max_tokens=40) for a in (None, "support", "legal"))
        )
        watcher.cancel()
        assert widest == 3  # one batch of three rows, not three batches
        assert together[0][0].startswith(base) and together[2][0].startswith(legal)

        await eng.unload_adapter("support")  # the first loaded
        assert (await run(eng, prompt, "legal", max_tokens=10))[0] == legal
        assert (await run(eng, prompt, max_tokens=10))[0] == base
        await eng.unload_adapter("legal")  # the last: the wrappers go too
        assert batcher.model.adapters == []
        assert (await run(eng, prompt, max_tokens=10))[0] == base
        await eng.load_adapter("legal", adapter_dirs["legal"])
        assert (await run(eng, prompt, "legal", max_tokens=10))[0] == legal


async def test_an_unload_survives_its_caller_leaving_and_ends_rows_left_on_it(
    tiny_model, adapter_dirs
):
    """An unload whose caller is cancelled still happens (else the old weights would be
    served on); a row still on the adapter ends with an error, the loop runs on."""
    from serve.models.batch_loop import StepResult
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching="padded")
    await eng.start()
    try:
        batcher = eng._batch
        await eng.load_adapter("support", adapter_dirs["support"])
        unload = asyncio.create_task(eng.unload_adapter("support"))
        await asyncio.sleep(0)
        unload.cancel()
        for _ in range(100):
            if not batcher.model.adapters:
                break
            await asyncio.sleep(0.02)
        assert batcher.model.adapters == [] and batcher.is_running()

        await eng.load_adapter("support", adapter_dirs["support"])
        results: asyncio.Queue[StepResult] = asyncio.Queue()
        prompt = chat(eng, "def handler(event):")
        batcher.submit(prompt, SamplingParams(max_tokens=2000), results.put_nowait, "support")
        await results.get()  # it runs
        await eng.unload_adapter("support")  # no lease here: nothing stops the unload
        last = await results.get()
        while not last.is_finished():
            last = await results.get()
        assert last.error and "unloaded" in last.error
        assert batcher.is_running() and batcher.running == 0
        assert (await run(eng, prompt, max_tokens=4))[0]
    finally:
        await eng.stop()


async def test_beside_continuous_batching_adapters_share_one_padded_batch(tiny_model, adapter_dirs):
    """Continuous batching cannot mix adapters: their requests go to one padded batch over
    the same model (no copies, no second KV cache sized to the device's free memory)."""
    from serve.models.padded_batching import PaddedBatcher

    async with two_adapters(tiny_model, adapter_dirs, "continuous") as (eng, prompt, base):
        shared = eng._adapters_batch  # where both adapters' rows go
        assert isinstance(shared, PaddedBatcher) and shared.model.adapters == ["support", "legal"]
        assert not isinstance(eng._batch, PaddedBatcher)
        assert shared.model._base is eng._model  # the same weights, wrapped in place
        together = await asyncio.gather(
            *(run(eng, prompt, a, max_tokens=10) for a in (None, "support", "legal"))
        )
        assert together[0][0] == base and len({t for t, _ in together}) == 3
        await eng.unload_adapter("support")
        await eng.unload_adapter("legal")
        assert (await run(eng, prompt, max_tokens=10))[0] == base
        assert eng.stats().adapters == [] and eng.healthy()
