"""Engine conformance for the transformers engine, on the tiny local model (CPU)."""

from __future__ import annotations

import asyncio

import pytest

from forge.errors import ContextLengthExceeded
from serve.models.engine import SamplingParams
from serve.models.tiny import TinyModelSpec, build_tiny_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
async def engine(tmp_path_factory):
    from serve.models.transformers_engine import TransformersEngine

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(corpus_files=40))
    eng = TransformersEngine(path, num_blocks=128, page_size=32, max_batch_tokens=512)
    await eng.start()
    yield eng
    await eng.stop()


async def run(engine, prompt, **params):
    params.setdefault("temperature", 0)  # greedy unless a test says otherwise
    outs = [o async for o in engine.generate(prompt, SamplingParams(**params))]
    return "".join(o.text for o in outs), outs


async def test_streams_deltas_with_exact_counts(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "def main():"}])
    text, outs = await run(engine, prompt, max_tokens=12)
    assert len(outs) >= 2  # streamed, not one lump
    last = outs[-1]
    assert last.prompt_tokens == len(prompt)
    assert last.finish_reason in ("length", "stop") and all(
        o.finish_reason is None for o in outs[:-1]
    )
    if last.finish_reason == "length":
        assert last.completion_tokens == 12
    assert text == engine.tokenizer.decode(
        engine.tokenizer(text, add_special_tokens=False).input_ids
    )


async def test_max_tokens_and_greedy_determinism(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "import os"}])
    a, outs = await run(engine, prompt, max_tokens=5)
    b, _ = await run(engine, prompt, max_tokens=5)
    assert a == b and outs[-1].completion_tokens <= 5


async def test_stop_string_ends_generation_before_it(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "class A:"}])
    full, _ = await run(engine, prompt, max_tokens=24)
    if len(full) < 6:
        pytest.skip("the random model ended too early to pick a stop string")
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    text, outs = await run(engine, prompt, max_tokens=24, stop=[stop])
    assert outs[-1].finish_reason == "stop"
    assert stop not in text and full.startswith(text)


async def test_concurrent_requests_match_single_ones(engine):
    prompts = [engine.encode_chat([{"role": "user", "content": f"x = {i}"}]) for i in range(8)]
    singles = [(await run(engine, p, max_tokens=8))[0] for p in prompts[:3]]
    together = await asyncio.gather(*(run(engine, p, max_tokens=8) for p in prompts))
    assert [t for t, _ in together][:3] == singles
    assert all(outs[-1].finish_reason for _, outs in together)


async def test_cancelled_stream_frees_its_slot(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "while True:"}])
    stream = engine.generate(prompt, SamplingParams(max_tokens=500))
    await anext(stream)
    await stream.aclose()  # what a disconnecting client does
    _, outs = await asyncio.wait_for(run(engine, prompt, max_tokens=4), 30)
    assert outs[-1].finish_reason in ("length", "stop")


async def test_prompts_that_cannot_fit_are_refused_before_any_work(engine):
    with pytest.raises(ContextLengthExceeded) as err:
        await anext(engine.generate([1] * engine.context_window, SamplingParams(max_tokens=1)))
    assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"
    with pytest.raises(ContextLengthExceeded) as err:
        await anext(engine.generate([1, 2, 3], SamplingParams(max_tokens=engine.context_window)))
    assert err.value.param == "max_tokens"


async def test_temperature_and_top_p_apply_per_request(engine):
    prompt = engine.encode_chat([{"role": "user", "content": "print("}])
    hot = {(await run(engine, prompt, max_tokens=12, temperature=1.5))[0] for _ in range(4)}
    assert len(hot) > 1  # sampling at 1.5 over a random model's flat logits
    greedy = {(await run(engine, prompt, max_tokens=12, temperature=0))[0] for _ in range(3)}
    assert len(greedy) == 1
    narrow = {
        (await run(engine, prompt, max_tokens=12, temperature=1.5, top_p=1e-6))[0] for _ in range(3)
    }
    assert narrow == greedy  # top_p that keeps one token is greedy again


async def test_a_dead_engine_fails_requests_with_503_instead_of_hanging(tmp_path):
    from forge.errors import ServiceUnavailable
    from serve.models.transformers_engine import TransformersEngine

    path = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=10))
    eng = TransformersEngine(path, num_blocks=32, page_size=32, max_batch_tokens=256)
    await eng.start()
    assert eng.healthy()
    eng._manager.stop(block=True)  # what a crash or OOM leaves: no loop running
    assert not eng.healthy()
    prompt = eng.encode_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ServiceUnavailable) as err:
        await asyncio.wait_for(run(eng, prompt, max_tokens=4), 15)
    assert err.value.status_code == 503
