"""The grammar mask over random logits, with the tiny model's tokenizer: whatever the
logits, a constrained row's output parses and matches its schema; rows without a
constraint are untouched; compiled grammars are cached and copied per request."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from serve.models.engine import SamplingParams
from serve.models.row_sampling import sample_rows
from serve.structured.grammar import GrammarCache
from serve.structured.mask import GrammarMask, consume
from serve.structured.spec import Constraint, parse_response_format

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

VOCAB = 1000
BOUNDED = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "fail", "retry"]},
        "count": {"type": "integer", "minimum": -5, "maximum": 500},
        "name": {"type": "string", "maxLength": 6},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
        "flag": {"type": "boolean"},
    },
    "required": ["status", "count", "name", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from serve.models.tiny import TinyModelSpec, build_tokenizer

    return build_tokenizer(TinyModelSpec(corpus_files=5))


@pytest.fixture(scope="module")
def grammars(tokenizer) -> GrammarCache:
    return GrammarCache.from_hf(tokenizer, n_vocab=VOCAB, eos_ids=[tokenizer.eos_token_id])


@pytest.fixture(scope="module")
def closers(tokenizer) -> torch.Tensor:
    """A bias towards tokens that close a string, object or array: random logits over a
    byte-level vocabulary would otherwise write strings a thousand tokens long."""
    bias = torch.zeros(VOCAB)
    for i in range(len(tokenizer)):
        if any(c in tokenizer.decode([i]) for c in '"}]'):
            bias[i] = 4.0
    return bias


def constraint(response_format: dict[str, Any]) -> Constraint:
    c = parse_response_format(response_format)
    assert c is not None
    return c


def schema(s: dict[str, Any]) -> Constraint:
    return constraint({"type": "json_schema", "json_schema": {"name": "t", "schema": s}})


def decode_batch(
    tokenizer: Any,
    grammars: GrammarCache,
    c: Constraint,
    seed: int,
    bias: torch.Tensor,
    rows: int = 4,
    budget: int = 200,
    mask: bool = True,
) -> list[str | None]:
    """``rows`` constrained rows interleaved with as many free ones, decoded over random
    logits (sampled at temperature 1); each constrained row's text, None if cut."""
    eos = {tokenizer.eos_token_id}
    gen = torch.Generator().manual_seed(seed)
    matchers = [grammars.matcher(c) for _ in range(rows)]
    constrained = list(range(1, 2 * rows, 2))  # the odd rows; the even ones are free
    out: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    grammar_mask = GrammarMask(2 * rows, VOCAB)
    params = [SamplingParams(temperature=1.0)] * (2 * rows)
    for _ in range(budget):
        logits = torch.randn(2 * rows, VOCAB, generator=gen) * 2 + bias
        free = logits[0::2].clone()
        live = [j for j in range(rows) if not done[j]]
        if mask:
            grammar_mask.apply(logits, [constrained[j] for j in live], [matchers[j] for j in live])
        assert torch.equal(logits[0::2], free)  # free rows untouched
        tokens = sample_rows(logits, params, [gen] * (2 * rows))
        for j in live:
            token = tokens[constrained[j]]
            complete, error = consume(matchers[j], token, eos)
            assert error is None, error
            if token not in eos:
                out[j].append(token)
            done[j] = complete
        if all(done):
            break
    return [tokenizer.decode(t) if d else None for t, d in zip(out, done, strict=True)]


@pytest.mark.parametrize("seed", range(12))
def test_random_logits_always_give_json_that_matches_the_schema(tokenizer, grammars, closers, seed):
    texts = decode_batch(tokenizer, grammars, schema(BOUNDED), seed, closers)
    for text in texts:
        assert text is not None  # a bounded schema ends within the budget
        jsonschema.validate(json.loads(text), BOUNDED)


@pytest.mark.parametrize("seed", range(6))
def test_json_object_always_gives_an_object(tokenizer, grammars, closers, seed):
    texts = decode_batch(
        tokenizer, grammars, constraint({"type": "json_object"}), seed, closers, budget=300
    )
    finished = [t for t in texts if t is not None]
    assert finished  # most end; none ends as anything but an object
    for text in finished:
        assert isinstance(json.loads(text), dict)
    for text in texts:
        assert text is None or text.startswith("{")


def test_without_the_mask_random_logits_break_the_grammar(tokenizer, grammars, closers):
    """The check above has teeth: the same decoding unmasked fails at once."""
    with pytest.raises(AssertionError, match="rejected"):
        decode_batch(tokenizer, grammars, schema(BOUNDED), 0, closers, mask=False)


def test_only_eos_is_allowed_once_the_json_closes(tokenizer, grammars):
    eos = tokenizer.eos_token_id
    matcher = grammars.matcher(constraint({"type": "json_object"}))
    for token in tokenizer("{}", add_special_tokens=False).input_ids:
        complete, error = consume(matcher, token, {eos})
        assert error is None
    assert complete and matcher.is_stopped()
    allowed = GrammarMask(1, VOCAB).fill([matcher])[0]
    assert allowed.nonzero().flatten().tolist() == [eos]
    # A top-level value that may go on (digits) allows EOS beside more of it.
    number = grammars.matcher(schema({"type": "integer", "minimum": 0, "maximum": 999}))
    assert consume(number, tokenizer.convert_tokens_to_ids("7"), {eos}) == (False, None)
    allowed = GrammarMask(1, VOCAB).fill([number])[0]
    assert allowed[eos] and allowed[tokenizer.convert_tokens_to_ids("3")]
    assert not allowed[tokenizer.convert_tokens_to_ids("a")]


def test_the_mask_touches_only_the_constrained_rows(grammars):
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    GrammarMask(3, VOCAB).apply(
        logits, [1], [grammars.matcher(constraint({"type": "json_object"}))]
    )
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    allowed = logits[1].isfinite()
    assert 0 < int(allowed.sum()) < VOCAB
    assert torch.equal(logits[1][allowed], before[1][allowed])


def test_a_cache_hit_is_a_copy_of_its_own(tokenizer, grammars):
    c = schema({"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"]})
    hits, misses = grammars.hits, grammars.misses
    first = grammars.matcher(c)
    second = grammars.matcher(c)
    assert (grammars.hits, grammars.misses) == (hits + 1, misses + 1)
    assert first is not second
    fresh = GrammarMask(1, VOCAB).fill([second])[0].clone()
    for token in tokenizer('{"k":', add_special_tokens=False).input_ids:
        assert consume(first, token, set()) == (False, None)
    assert not torch.equal(GrammarMask(1, VOCAB).fill([first])[0], fresh)
    assert torch.equal(GrammarMask(1, VOCAB).fill([second])[0], fresh)  # untouched
    assert torch.equal(GrammarMask(1, VOCAB).fill([grammars.matcher(c)])[0], fresh)
