"""Streamed text is exactly the full decode, however the tokens arrive."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.models.engine import IncrementalDecoder


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_deltas_add_up_to_the_full_decode(tokenizer, data):
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=40))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), max_size=8)))
    decoder = IncrementalDecoder(tokenizer)
    streamed, start = "", 0
    for cut in [*cuts, len(ids)]:
        streamed += decoder.push(ids[start:cut])
        start = max(start, cut)
    streamed += decoder.flush()
    assert streamed == tokenizer.decode(ids, skip_special_tokens=True)


def test_half_a_character_is_held_back_until_complete(tokenizer):
    ids = tokenizer("héllo ☃ snow", add_special_tokens=False).input_ids
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push([i]) for i in ids]
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) + decoder.flush() == "héllo ☃ snow"
