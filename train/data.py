"""Fine-tuning data: OpenAI fine-tuning JSONL to token ids, loss masks and packed rows.

Ray-free on purpose: the Ray Train worker calls these, and so do the benchmark and tests.

Labels follow Hugging Face's convention: ``labels[t]`` is the target *at* position ``t``
(the model shifts them), ``-100`` where nothing is learned. Only what the model should
say is labelled: an assistant message's content and its end-of-turn marker, never the
role header, the system or user turns, nor an assistant message with ``weight: 0``.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE = -100


@dataclass(slots=True)
class Example:
    """One tokenised training example; ``labels`` aligns with ``input_ids``."""

    input_ids: list[int]
    labels: list[int]

    @property
    def labelled(self) -> int:
        """How many tokens the loss sees."""
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass(slots=True)
class Packed:
    """A row of whole examples laid end to end.

    ``position_ids`` restart at 0 for each example. Given position ids and no
    ``attention_mask``, transformers (>= 4.54, here 5.2x) detects the restarts and builds
    a block-diagonal causal mask (SDPA/eager; flash-attention uses them as varlen
    boundaries), so examples in a row do not attend to each other: the loop passes no
    mask and ``use_cache=False`` (with a cache the detection is skipped).
    """

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def add(self, example: Example) -> None:
        self.input_ids.extend(example.input_ids)
        self.labels.extend(example.labels)
        self.position_ids.extend(range(len(example.input_ids)))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSONL file, skipping blank lines (validation happened at upload)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def tokenize_example(example: dict[str, Any], tokenizer: Any, max_len: int) -> Example | None:
    """Either format, told apart as the upload validator does."""
    if "messages" in example:
        return tokenize_chat(example, tokenizer, max_len)
    return tokenize_prompt_completion(example, tokenizer, max_len)


def tokenize_chat(example: dict[str, Any], tokenizer: Any, max_len: int) -> Example | None:
    """A chat example through the tokenizer's own chat template; None if nothing to learn.

    Templates rarely mark assistant spans (``{% generation %}``), so the conversation is
    rendered prefix by prefix: the text each message adds is the difference of two
    renders, and each piece is tokenised on its own so that prompt tokens split exactly as
    they will at inference, when the prompt ends with the assistant header.
    """
    messages = [_plain_message(m) for m in example["messages"]]
    tools = example.get("tools")
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(example["messages"]):
        if message.get("role") == "assistant":
            header = _render(tokenizer, messages[:i], tools, generation_prompt=True)
            _extend(tokenizer, ids, labels, _suffix(header, done), trained=False)
            done = header
        rendered = _render(tokenizer, messages[: i + 1], tools, generation_prompt=False)
        piece = _suffix(rendered, done)
        if message.get("role") == "assistant" and message.get("weight", 1) != 0:
            said, rest = _split_turn_end(piece, tokenizer.eos_token)
            _extend(tokenizer, ids, labels, said, trained=True)
            _extend(tokenizer, ids, labels, rest, trained=False)
        else:
            _extend(tokenizer, ids, labels, piece, trained=False)
        done = rendered
    return _finish(ids, labels, max_len)


def tokenize_prompt_completion(
    example: dict[str, Any], tokenizer: Any, max_len: int
) -> Example | None:
    """Prompt then completion then EOS, raw (no template, as OpenAI's legacy format);
    loss on the completion and the EOS only, so the model learns where to stop. The
    prompt gets the tokenizer's own special tokens (a BOS, if it adds one), as a
    completions request's prompt does."""
    ids: list[int] = []
    labels: list[int] = []
    prompt = str(example.get("prompt") or "")
    _extend(tokenizer, ids, labels, prompt, trained=False, special=True)
    _extend(tokenizer, ids, labels, str(example.get("completion") or ""), trained=True)
    ids.append(int(tokenizer.eos_token_id))
    labels.append(int(tokenizer.eos_token_id))
    return _finish(ids, labels, max_len)


def tokenize_file(path: str | Path, tokenizer: Any, max_len: int) -> list[Example]:
    """Every example of a JSONL file that still has something to learn after truncation."""
    examples = (tokenize_example(obj, tokenizer, max_len) for obj in read_jsonl(path))
    return [e for e in examples if e is not None]


def pack(examples: Iterable[Example], max_len: int) -> list[Packed]:
    """Best-fit-decreasing packing of whole examples into rows of at most ``max_len``.

    Fewer rows means less padding; the result depends only on the examples' lengths and
    order, so a resumed run packs exactly as the run it resumes did.
    """
    ordered = sorted(enumerate(examples), key=lambda pair: (-len(pair[1].input_ids), pair[0]))
    rows: list[Packed] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for _, example in ordered:
        size = len(example.input_ids)
        if size > max_len:
            raise ValueError(f"an example of {size} tokens does not fit max_len {max_len}")
        at = bisect.bisect_left(free, (size, -1))
        if at == len(free):
            rows.append(Packed())
            room, index = max_len, len(rows) - 1
        else:
            room, index = free.pop(at)
        rows[index].add(example)
        if room - size > 0:
            bisect.insort(free, (room - size, index))
    return rows


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message as templates expect it: text content, no training-only keys."""
    plain = {k: v for k, v in message.items() if k != "weight"}
    content = plain.get("content")
    if isinstance(content, list):
        plain["content"] = "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return plain


def _render(
    tokenizer: Any, messages: list[dict[str, Any]], tools: Any, *, generation_prompt: bool
) -> str:
    text = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
    )
    return str(text)


def _suffix(rendered: str, done: str) -> str:
    """What a longer prefix adds; templates that rewrite earlier turns cannot be split."""
    if not rendered.startswith(done):
        raise ValueError(
            "the chat template renders a conversation's earlier turns differently once "
            "later turns follow; assistant tokens cannot be told apart"
        )
    return rendered[len(done) :]


def _split_turn_end(piece: str, end_marker: str | None) -> tuple[str, str]:
    """(what the assistant says including its end marker, the template's trailing text)."""
    if end_marker and end_marker in piece:
        cut = piece.rindex(end_marker) + len(end_marker)
        return piece[:cut], piece[cut:]
    said = piece.rstrip()
    return said, piece[len(said) :]


def _extend(
    tokenizer: Any,
    ids: list[int],
    labels: list[int],
    text: str,
    *,
    trained: bool,
    special: bool = False,
) -> None:
    """Append ``text``'s tokens. Rendered chat text already holds its special tokens."""
    if not text and not special:
        return
    new = [int(t) for t in tokenizer(text, add_special_tokens=special)["input_ids"]]
    ids.extend(new)
    labels.extend(new if trained else [IGNORE] * len(new))


def _finish(ids: list[int], labels: list[int], max_len: int) -> Example | None:
    """Truncate; the first token has no context to be predicted from, so it is never
    labelled (which also keeps every label intact when examples are packed)."""
    ids, labels = ids[:max_len], labels[:max_len]
    if labels:
        labels[0] = IGNORE
    example = Example(ids, labels)
    return example if example.labelled else None
