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


def test_a_tokenizer_that_cleans_up_spaces_streams_its_plain_decode():
    """transformers' clean-up of spaces before punctuation runs over a whole text; run
    over each window of a stream it lost characters (a review found 'don't   ! it's' for
    "don't,.?! it's"). The stream is the decode without it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = "don't , . ? ! it 's we 're here ."
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(cleanup=False)
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]"], show_progress=False
    )
    backend.train_from_iterator([text] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    decoder = IncrementalDecoder(tokenizer)
    streamed = "".join(decoder.push([i]) for i in ids) + decoder.flush()
    plain = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert streamed == plain


def test_kept_special_tokens_are_text_and_the_other_specials_still_dropped(tiny_model):
    """A model whose tool-call markers are special tokens (Hermes 2 Pro): the model
    server keeps them in the text so the parser sees them; end-of-turn stays out."""
    from transformers import AutoTokenizer

    from serve.models.engine import special_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(["<tool_call>", "</tool_call>"], special_tokens=True)
    specials = special_ids(tokenizer)
    keep = (specials["<tool_call>"], specials["</tool_call>"])
    text = 'ok<tool_call>{"name": "f"}</tool_call>'
    ids = [*tokenizer(text, add_special_tokens=False).input_ids, specials["</s>"]]
    assert keep[0] in ids
    plain, kept = IncrementalDecoder(tokenizer), IncrementalDecoder(tokenizer, keep)
    assert "".join(plain.push([i]) for i in ids) + plain.flush() == 'ok{"name": "f"}'
    assert "".join(kept.push([i]) for i in ids) + kept.flush() == text
