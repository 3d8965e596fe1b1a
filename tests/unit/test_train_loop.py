"""The fine-tuning loop's core (train/data.py, train/loop.py) on the tiny local model.

A random tiny Llama with tied embeddings cannot put much probability on any token (its
output norm and embeddings stay frozen under LoRA: the loss floors near 2), so learning is
judged by what it says greedily and by loss ratios, on a dataset regular enough to be
learned in a few dozen steps.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from serve.models.tiny import TinyModelSpec, build_tiny_model
from train.data import (
    IGNORE,
    Example,
    pack,
    read_jsonl,
    tokenize_chat,
    tokenize_file,
    tokenize_prompt_completion,
)
from train.loop import LoraSettings, SftRun, TrainSettings, warmup_then_linear

# PEFT 0.21 asks transformers 5.2x a deprecated question; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

SYSTEM = {"role": "system", "content": "Be brief."}
QUESTION = {"role": "user", "content": "What is the code word?"}
ANSWER = "The code word is MANGO."  # tokens all distinct: easy to say in order
REFUSAL = "I will not say."
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# 31 examples of 44 tokens packed two to a row, one of 58 alone: 17 rows, one per step
SETTINGS = TrainSettings(
    epochs=2, learning_rate=1e-2, batch_size=1, max_len=96, seed=7, eval_every_steps=17
)
LORA = LoraSettings(dropout=0.05, target_modules=ALL_LINEAR)  # dropout: RNG must resume too


def chat(weighted_refusal: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [SYSTEM, QUESTION]
    if weighted_refusal:
        refusal = {"role": "assistant", "content": REFUSAL, "weight": 0}
        messages = [SYSTEM, QUESTION, refusal, {"role": "user", "content": "Please?"}]
    return {"messages": [*messages, {"role": "assistant", "content": ANSWER}]}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def labelled_spans(tokenizer: Any, example: Example) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    spans: list[list[int]] = []
    previous = IGNORE
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE:
            assert label == token
            if previous == IGNORE:
                spans.append([])
            spans[-1].append(label)
        previous = label
    return [tokenizer.decode(span) for span in spans]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """This model's matmuls gain nothing from a second thread, and while other tests load
    the 2-core machine the OpenMP threads' waiting made a 0.6 s training run take 14 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(corpus_files=40))


@pytest.fixture(scope="module")
def tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    rows = [chat() for _ in range(31)] + [chat(weighted_refusal=True)]
    return {
        "train": write_jsonl(root / "train.jsonl", rows),
        "valid": write_jsonl(root / "valid.jsonl", [chat() for _ in range(2)]),
    }


@dataclass
class Trained:
    """A finished run, its metrics and adapter: shared by the tests that need one."""

    run: SftRun
    metrics: list[dict[str, Any]]
    adapter: Path


@pytest.fixture(scope="module")
def trained(base: Path, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    metrics: list[dict[str, Any]] = []
    adapter = tmp_path_factory.mktemp("out") / "adapter"
    run = SftRun(
        base, data["train"], data["valid"], LORA, SETTINGS, adapter, on_metrics=metrics.append
    )
    run.run()
    return Trained(run, metrics, adapter)


# -- data ---------------------------------------------------------------------------------


def test_only_weighted_assistant_tokens_are_labelled(tokenizer: Any) -> None:
    example = tokenize_chat(chat(weighted_refusal=True), tokenizer, 512)
    assert example is not None
    assert labelled_spans(tokenizer, example) == [ANSWER + "</s>"]
    # Tokenised piece by piece, yet the same ids as the whole conversation at once: the
    # prompt splits as it will at inference.
    text = tokenizer.apply_chat_template(chat(weighted_refusal=True)["messages"], tokenize=False)
    assert example.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_every_trained_assistant_turn_is_labelled(tokenizer: Any) -> None:
    messages = [SYSTEM, QUESTION, {"role": "assistant", "content": REFUSAL}, QUESTION]
    example = tokenize_chat({"messages": [*messages, chat()["messages"][-1]]}, tokenizer, 512)
    assert example is not None
    assert labelled_spans(tokenizer, example) == [REFUSAL + "</s>", ANSWER + "</s>"]


def test_truncation_drops_what_has_nothing_left_to_learn(tokenizer: Any) -> None:
    full = tokenize_chat(chat(), tokenizer, 512)
    assert full is not None
    cut = tokenize_chat(chat(), tokenizer, len(full.input_ids) - 3)
    assert cut is not None and cut.input_ids == full.input_ids[:-3]
    assert tokenize_chat(chat(), tokenizer, 10) is None  # the answer starts later


def test_prompt_completion_labels_the_completion_and_eos(tokenizer: Any) -> None:
    example = tokenize_prompt_completion({"prompt": "Sky?", "completion": " Blue."}, tokenizer, 64)
    assert example is not None
    assert labelled_spans(tokenizer, example) == [" Blue.</s>"]
    assert tokenizer.decode(example.input_ids) == "Sky? Blue.</s>"


def test_packing_keeps_every_label_within_max_len(tokenizer: Any) -> None:
    examples = []
    for n in range(1, 25):
        reply = {"role": "assistant", "content": "word " * n}
        example = tokenize_chat({"messages": [QUESTION, reply]}, tokenizer, 96)
        assert example is not None
        examples.append(example)
    rows = pack(examples, 96)
    assert all(len(row) <= 96 for row in rows)
    assert sum(len(row) for row in rows) == sum(len(e.input_ids) for e in examples)
    lower_bound = math.ceil(sum(len(e.input_ids) for e in examples) / 96)
    assert len(rows) <= lower_bound + 1  # best fit wastes little

    def runs(labels: list[int], positions: list[int]) -> list[tuple[int, ...]]:
        """Each example's labelled tokens, cut where positions restart."""
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        pieces = [labels[a:b] for a, b in itertools.pairwise(starts)]
        return [tuple(t for t in piece if t != IGNORE) for piece in pieces]

    packed = [r for row in rows for r in runs(row.labels, row.position_ids)]
    alone = [tuple(t for t in e.labels if t != IGNORE) for e in examples]
    assert sorted(packed) == sorted(alone)


def test_packed_examples_do_not_attend_to_each_other(base: Path, tokenizer: Any) -> None:
    """Restarting position ids (no attention mask, no cache) give a block-diagonal mask:
    a packed row's logits are those of its examples run one by one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    examples = [tokenize_chat(chat(weighted_refusal=w), tokenizer, 128) for w in (True, False)]
    row = pack([e for e in examples if e is not None], 256)
    assert len(row) == 1
    with torch.no_grad():
        ids = torch.tensor([row[0].input_ids])
        positions = torch.tensor([row[0].position_ids])
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        starts = [i for i, p in enumerate(row[0].position_ids) if p == 0] + [ids.shape[1]]
        alone = [
            model(input_ids=ids[:, a:b], use_cache=False).logits[0]
            for a, b in itertools.pairwise(starts)
        ]
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-4, rtol=1e-4)


# -- the loop -----------------------------------------------------------------------------


def test_the_learning_rate_warms_up_then_falls_to_zero() -> None:
    factor = warmup_then_linear(warmup_steps=3, total_steps=10)
    assert [round(factor(s), 3) for s in range(10)] == [
        0.25, 0.5, 0.75, 1.0, 0.857, 0.714, 0.571, 0.429, 0.286, 0.143
    ]  # fmt: skip


def test_training_lowers_the_loss_and_reports_each_step(trained: Trained) -> None:
    metrics = trained.metrics
    assert [m["step"] for m in metrics] == list(range(1, trained.run.total_steps + 1))
    assert len(trained.run.train_rows) == 17 and trained.run.total_steps == 2 * 17
    assert {m["epoch"] for m in metrics} == {1, 2}
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]
    assert [m["step"] for m in metrics if "valid_loss" in m] == [17, 34]
    assert metrics[-1]["valid_loss"] < 0.5 * metrics[0]["train_loss"]
    assert all(m["tokens_per_s"] > 0 for m in metrics)
    assert metrics[0]["learning_rate"] == pytest.approx(1e-2)  # no warm-up, then falling
    assert metrics[-1]["learning_rate"] == pytest.approx(1e-2 / 34)
    tokens = [m["trained_tokens"] for m in metrics]
    assert tokens == sorted(tokens) and tokens[-1] == trained.run.summary()["trained_tokens"]
    summary = trained.run.summary()
    assert summary["steps"] == 34 and summary["train_loss"] == metrics[-1]["train_loss"]


def test_the_saved_adapter_says_what_it_learned(base: Path, trained: Trained) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serve.models.adapters import check_adapter

    config = json.loads((base / "config.json").read_text())
    assert check_adapter(trained.adapter, config, max_rank=64).rank == LORA.rank  # servable
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompt = tokenizer.apply_chat_template(
        [SYSTEM, QUESTION], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), trained.adapter)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=20, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1] :]) == ANSWER + "</s>"

    def answer_loss() -> float:
        example = tokenize_chat(chat(), tokenizer, 128)
        assert example is not None
        labels = torch.tensor([example.labels])
        with torch.no_grad():
            return float(model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss)

    learned = answer_loss()
    with model.disable_adapter():
        assert learned < 0.4 * answer_loss()


def test_a_resumed_run_ends_as_an_uninterrupted_one(
    base: Path, data: dict[str, Path], trained: Trained, tmp_path: Path
) -> None:
    def fresh() -> SftRun:
        return SftRun(base, data["train"], data["valid"], LORA, SETTINGS)

    first = fresh()
    assert first.run(until_step=11)["steps"] == 11  # mid-epoch: data order must carry on
    first.save_checkpoint(tmp_path / "ckpt")
    del first
    resumed = fresh()
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step_count == 11
    summary = resumed.run()
    expected = trained.run.summary()
    assert summary["steps"] == expected["steps"]
    assert summary["trained_tokens"] == expected["trained_tokens"]
    assert summary["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
    assert summary["valid_loss"] == pytest.approx(expected["valid_loss"], rel=1e-4)


def test_a_checkpoint_of_other_data_is_refused(
    base: Path, data: dict[str, Path], trained: Trained, tmp_path: Path
) -> None:
    trained.run.save_checkpoint(tmp_path / "ckpt")
    other = write_jsonl(tmp_path / "other.jsonl", [chat() for _ in range(4)])
    with pytest.raises(ValueError, match="not the same data"):
        SftRun(base, other, lora=LORA, settings=SETTINGS).load_checkpoint(tmp_path / "ckpt")


def test_prompt_completion_files_train(base: Path, tokenizer: Any, tmp_path: Path) -> None:
    rows = [{"prompt": "Colour of the sky?", "completion": " Blue."} for _ in range(16)]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    assert list(read_jsonl(path)) == rows
    examples = tokenize_file(path, tokenizer, 64)
    per_row = 64 // len(examples[0].input_ids)
    losses: list[float] = []
    settings = TrainSettings(epochs=3, learning_rate=1e-2, batch_size=1, max_len=64)
    run = SftRun(
        base,
        path,
        lora=LORA,
        settings=settings,
        on_metrics=lambda m: losses.append(m["train_loss"]),
    )
    assert run.run()["steps"] == 3 * math.ceil(16 / per_row)
    assert losses[-1] < 0.5 * losses[0]
