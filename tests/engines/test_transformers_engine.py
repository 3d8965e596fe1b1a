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
    StructuredConformance,
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


class TestTransformersEngine(
    EngineConformance, SeedConformance, JoinConformance, StructuredConformance
):
    pass


@pytest.mark.parametrize("batching", ["slots", "padded", "continuous"])
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
    if batching != "continuous":  # adapters load on the loop's thread: none to load them
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(eng.load_adapter("a", adapter_dirs["support"]), 15)
    await eng.stop()


@pytest.mark.parametrize("batching", ["slots", "padded"])
async def test_our_batches_mix_adapters_and_survive_their_unloading(
    tiny_model, adapter_dirs, batching
):
    """Base and adapter requests share one batch (each row through its own adapter),
    and adapters come and go in any order without touching the others' answers."""
    async with two_adapters(tiny_model, adapter_dirs, batching) as (eng, prompt, base):
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


async def test_an_adapter_on_lm_head_applies_to_every_token_in_the_slot_batch(tiny_model, tmp_path):
    """The slot batch's decode step must go through the wrapped lm_head, not the one the
    model had when the batch started: its answer equals the padded batch's."""
    import json

    import torch
    from safetensors.torch import save_file

    from serve.models.transformers_engine import TransformersEngine

    config = json.loads((tiny_model / "config.json").read_text())
    rank, generator = 8, torch.Generator().manual_seed(0)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["lm_head"]}
        )
    )
    prefix = "base_model.model.lm_head"
    save_file(
        {
            f"{prefix}.lora_A.weight": torch.randn(
                rank, config["hidden_size"], generator=generator
            ),
            f"{prefix}.lora_B.weight": torch.randn(config["vocab_size"], rank, generator=generator),
        },
        str(tmp_path / "adapter_model.safetensors"),
    )
    answers = {}
    for batching in ("slots", "padded"):
        eng = TransformersEngine(tiny_model, batching=batching)
        await eng.start()
        try:
            await eng.load_adapter("head", tmp_path)
            prompt = chat(eng, "def handler(event):")
            answers[batching] = (await run(eng, prompt, "head", max_tokens=12))[0]
            base = (await run(eng, prompt, max_tokens=12))[0]
        finally:
            await eng.stop()
    assert answers["slots"] == answers["padded"] != base


async def test_the_slot_batch_cuts_the_context_window_to_its_kv_budget(tiny_model, monkeypatch):
    """Every slot gets the longest request's columns, so the KV memory bounds the window:
    a request beyond it is a 400 before any work, not an out-of-memory crash of every
    stream. A budget too small to be useful is refused at start."""
    from forge.errors import ContextLengthExceeded
    from serve.models.slot_decoder import column_bytes
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching="slots", max_batch=4)
    per_token = {}

    def budget(self, device):
        per_token["bytes"] = column_bytes(self._model.config, 4, self._model.dtype)
        return 300 * per_token["bytes"]

    monkeypatch.setattr(TransformersEngine, "_kv_budget", budget)
    await eng.start()
    try:
        assert eng.context_window == 300 and eng._batch.cache.capacity == 300
        prompt = chat(eng, "def handler(event):")
        assert (await run(eng, prompt, max_tokens=300 - len(prompt)))[1][-1].finish_reason
        with pytest.raises(ContextLengthExceeded):
            await run(eng, prompt, max_tokens=301 - len(prompt))
        assert eng.healthy()
    finally:
        await eng.stop()
    monkeypatch.setattr(TransformersEngine, "_kv_budget", lambda self, device: 1000)
    with pytest.raises(ValueError, match="lower max_batch"):
        await TransformersEngine(tiny_model, batching="slots").start()


@pytest.mark.parametrize("batching", ["slots", "padded"])
async def test_a_crash_during_prefill_answers_the_arrivals_at_once(tiny_model, batching):
    """Requests being prefilled when the loop dies get the loop's error, not silence
    until the engine's health poll notices."""
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching=batching)
    await eng.start()
    try:

        def broken(arrivals):
            raise RuntimeError("boom in prefill")

        eng._batch._prefill_forward = broken
        with pytest.raises(ServiceUnavailable, match="boom in prefill"):
            await asyncio.wait_for(run(eng, chat(eng, "hi"), max_tokens=4), 15)
        assert not eng.healthy()
    finally:
        await eng.stop()


@pytest.mark.parametrize("batching", ["slots", "padded"])
async def test_prefills_split_at_max_prefill_tokens_and_answer_as_alone(tiny_model, batching):
    """Arrivals beyond the prefill cap wait for the next step's prefill (one held back
    from the queue, counted as waiting); every answer is the one it gets alone."""
    from serve.models.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, batching=batching, max_prefill_tokens=1)
    await eng.start()
    try:
        prompts = [chat(eng, f"def f{i}(x):") for i in range(4)]
        alone = [await run(eng, p, max_tokens=6) for p in prompts]
        prefills = 0
        original = eng._batch._prefill

        def counting(arrivals):
            nonlocal prefills
            prefills += 1
            assert len(arrivals) == 1  # each prompt is over the cap: alone
            return original(arrivals)

        eng._batch._prefill = counting
        together = await asyncio.gather(*(run(eng, p, max_tokens=6) for p in prompts))
        assert together == alone and prefills == 4
    finally:
        await eng.stop()
