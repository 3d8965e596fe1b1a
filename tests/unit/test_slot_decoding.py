"""The slot batch's decode step against each model family's own forward, its cache, and
its CUDA-graph runner's fallback (the capture itself needs a GPU: bench/gpu_engine_bench)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from serve.models.cuda_graphs import GraphedStep, bucket
from serve.models.slot_decoder import SlotCache, SlotDecoder, unsupported_reason
from tests.engines.conformance import chat, run, settled

SMALL = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}
FAMILIES = {
    "llama": {"attention_bias": True},
    "mistral": {"sliding_window": None},
    "qwen2": {},  # q/k/v biases
    "qwen3": {},  # RMSNorm on each head's q and k
}


def small_model(model_type: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **SMALL, **extra)
    return AutoModelForCausalLM.from_config(config).eval()


def prefill_alone(model, prompt: list[int], steps: int):
    """The model's own greedy decode of one prompt: per layer its keys and values after
    the prompt, and the logits of each following step (fed back its own argmax)."""
    cache = DynamicCache(config=model.config)
    out = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True)
    kept = [(layer.keys[0].clone(), layer.values[0].clone()) for layer in cache.layers]
    logits = [out.logits[0, -1]]
    for _ in range(steps):
        token = logits[-1].argmax()[None, None]
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        logits.append(out.logits[0, -1])
    return kept, logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.inference_mode()
def test_the_step_matches_the_models_own_forward(family):
    """Rows of different lengths in one step, several steps, each row's logits as the
    model's own forward gives them for that row alone."""
    model = small_model(family, **FAMILIES[family])
    assert unsupported_reason(model) is None
    prompts = [[5, 9, 3], [7] * 11, [1, 2, 3, 4, 5, 6, 7], [42]]
    cache = SlotCache(model.config, 8, 16, 64, torch.float32, "cpu")
    decoder = SlotDecoder(model, cache)
    expected = []
    for slot, prompt in enumerate(prompts):
        alone, logits = prefill_alone(model, prompt, steps=4)
        cache.write(slot, [k for k, _ in alone], [v for _, v in alone])
        expected.append(logits)
    positions = torch.tensor([len(p) for p in prompts])
    tokens = torch.stack([e[0].argmax() for e in expected])
    for step in range(1, 5):
        if step == 3:
            cache.grow(64)  # mid-sequence: contents kept
        logits = decoder.step(tokens, positions, int(positions.max()) + 1)
        for row, want in enumerate(expected):
            torch.testing.assert_close(logits[row], want[step], atol=1e-5, rtol=1e-4)
        tokens, positions = logits.argmax(-1), positions + 1


def test_models_the_step_cannot_run_exactly_are_named():
    assert "model type 'gpt2'" in unsupported_reason(
        AutoModelForCausalLM.from_config(
            AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=64)
        )
    )
    windowed = small_model("mistral", sliding_window=8)
    assert unsupported_reason(windowed) == "sliding-window attention"
    dynamic = small_model("llama", rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert "changes with the sequence length" in unsupported_reason(dynamic)
    with pytest.raises(ValueError, match="does not support"):
        SlotDecoder(windowed, SlotCache(windowed.config, 1, 8, 8, torch.float32, "cpu"))


def test_the_cache_grows_up_to_its_capacity_and_moves_sequences():
    config = small_model("llama").config
    cache = SlotCache(config, slots=3, columns=4, capacity=10, dtype=torch.float32, device="cpu")
    keys = [torch.randn(2, 3, 16) for _ in range(2)]
    cache.write(2, keys, [k + 1 for k in keys])
    cache.grow(16)  # capped
    assert cache.columns == 10 and cache.keys[0].shape == (3, 2, 10, 16)
    cache.move(2, 0, length=3)
    for layer, k in enumerate(keys):
        assert torch.equal(cache.keys[layer][0, :, :3], k)
        assert torch.equal(cache.values[layer][0, :, :3], k + 1)
        assert not cache.keys[layer][0, :, 3:].any()


def test_buckets_are_powers_of_two_within_bounds():
    assert [bucket(n, 128) for n in (1, 2, 3, 5, 64, 65, 200)] == [1, 2, 4, 8, 64, 128, 128]
    assert bucket(10, 48, floor=64) == 48 and bucket(3, 512, floor=64) == 64


@torch.inference_mode()
def test_a_capture_that_fails_falls_back_to_the_eager_step():
    """Asked for graphs where none can be captured (here: no CUDA), the runner says why
    and answers with the eager step's logits, now and on every later step."""
    model = small_model("llama")
    cache = SlotCache(model.config, 4, 16, 16, torch.float32, "cpu")
    decoder = SlotDecoder(model, cache)
    graphed = GraphedStep(decoder.step, 4, torch.device("cpu"), graphs=True)
    assert graphed.disabled is None
    got = graphed.run([3, 4], [0, 0], 1, cache.columns)
    assert graphed.disabled and graphed.captured == 0
    want = decoder.step(torch.tensor([3, 4]), torch.tensor([0, 0]), 1)
    torch.testing.assert_close(got, want)
    assert graphed.run([5], [1], 2, cache.columns).shape == (1, SMALL["vocab_size"])


async def test_rows_of_any_length_leaving_at_any_time_answer_as_alone(tiny_model):
    """Prompts past the first cache allocation (it grows), and rows finishing at
    different steps (the last rows move into the freed slots): every answer is the one
    the request gets alone."""
    from serve.models.slot_batching import FIRST_COLUMNS
    from serve.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model, batching="slots", max_batch=8)
    await engine.start()
    try:
        batcher = engine._batch
        assert batcher.graphs.disabled == "not on CUDA"
        long_prompt = chat(engine, "def handler(event): " + "x = x + 1; " * 80)
        assert len(long_prompt) > FIRST_COLUMNS
        prompts = [chat(engine, f"def f{i}(x):") for i in range(5)] + [long_prompt]
        lengths = [3, 17, 5, 30, 9, 12]
        alone = [await run(engine, p, max_tokens=n) for p, n in zip(prompts, lengths, strict=True)]
        together = await asyncio.gather(
            *(run(engine, p, max_tokens=n) for p, n in zip(prompts, lengths, strict=True))
        )
        assert together == alone
        assert batcher.cache.columns > FIRST_COLUMNS
        assert await settled(engine)  # (rows leave the batch just after their last token)
    finally:
        await engine.stop()


def test_a_cancel_landing_while_rows_are_dropped_is_kept_for_the_next_step():
    """The batch loop drops cancelled rows while the event loop may cancel more: a
    cancel arriving mid-drop must not be consumed without its row being cut."""
    from serve.models.batch_loop import BatchLoop, Request
    from serve.models.engine import SamplingParams

    class Rows(BatchLoop):
        def _cut(self, keep):
            return [self._rows[i] for i in keep]

    batch = Rows(small_model("llama"), eos_token_ids=[])
    loop = asyncio.new_event_loop()
    rows = [Request(f"req-{i}", [1], SamplingParams(), print, loop) for i in (1, 0)]
    batch._rows, batch._live = list(rows), {"req-0", "req-1"}

    class CancelsMeanwhile(set):
        def __contains__(self, item):  # req-1 was looked at and kept; its cancel lands now
            if item == "req-0" and "req-1" not in self:
                batch.cancel_request("req-1")
            return super().__contains__(item)

    batch._cancelled = CancelsMeanwhile({"req-0"})
    batch._drop(batch._cancelled)
    assert [r.request_id for r in batch._rows] == ["req-1"]
    assert "req-1" in batch._cancelled and "req-1" in batch._live  # cut on the next step
    batch._drop(batch._cancelled)
    assert batch._rows == [] and not batch._live
    loop.close()
