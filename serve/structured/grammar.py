"""Compiled grammars per engine: one llguidance tokenizer, and a warmed prototype matcher
per schema (LRU) that each request deep-copies (microseconds, where compiling and the
first mask of a 20-property schema take milliseconds).

Compiling runs off the event loop and off the batch thread (``acquire``: a worker
thread); the batch thread only fills masks and consumes tokens.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import OrderedDict
from typing import Any

from llguidance import LLMatcher, LLParserLimits, LLTokenizer

from serve.structured.spec import Constraint, check_grammar, grammar_error

CACHED_SCHEMAS = 128


def tokenizer_json(hf_tokenizer: Any) -> str:
    """A Hugging Face fast tokenizer as the ``tokenizer.json`` llguidance reads (without
    padding or truncation, which would change how it tokenizes)."""
    backend = copy.copy(hf_tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    return str(backend.to_str())


class GrammarCache:
    """``n_vocab``: the width of the model's logits (at least the tokenizer's size);
    ``eos_ids``: every id that ends a turn (allowed once the output is complete)."""

    def __init__(
        self, tokenizer: str, *, n_vocab: int, eos_ids: list[int], size: int = CACHED_SCHEMAS
    ) -> None:
        self.tokenizer = LLTokenizer(tokenizer, n_vocab=n_vocab, eos_token=list(eos_ids))
        self.n_vocab = n_vocab
        self.size = size
        self.limits = LLParserLimits()
        self._protos: OrderedDict[str, LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @classmethod
    def from_hf(cls, hf_tokenizer: Any, *, n_vocab: int, eos_ids: list[int]) -> GrammarCache:
        return cls(tokenizer_json(hf_tokenizer), n_vocab=n_vocab, eos_ids=eos_ids)

    def matcher(self, constraint: Constraint) -> LLMatcher:
        """A fresh matcher for one request (blocking: compiles on a miss); a 400 when
        the grammar cannot be enforced with this tokenizer."""
        with self._lock:
            proto = self._protos.get(constraint.key)
            if proto is not None:
                self._protos.move_to_end(constraint.key)
                self.hits += 1
                return proto.deep_copy()
        proto = self._compile(constraint)  # outside the lock: others hit meanwhile
        with self._lock:
            self.misses += 1
            self._protos[constraint.key] = proto
            self._protos.move_to_end(constraint.key)
            while len(self._protos) > self.size:
                self._protos.popitem(last=False)
            return proto.deep_copy()

    async def acquire(self, constraint: Constraint) -> LLMatcher:
        """``matcher`` on a worker thread."""
        return await asyncio.to_thread(self.matcher, constraint)

    def _compile(self, constraint: Constraint) -> LLMatcher:
        check_grammar(constraint, self.tokenizer)
        proto = LLMatcher(self.tokenizer, constraint.grammar, log_level=0, limits=self.limits)
        if proto.is_error():
            raise grammar_error(proto.get_error(), constraint.param)
        proto.compute_bitmask()  # warms the lexer for the first step; the state is unchanged
        if proto.is_error():
            raise grammar_error(proto.get_error(), constraint.param)
        return proto
