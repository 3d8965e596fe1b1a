"""The embedded default model: built from local text, loaded back through from_pretrained."""

from __future__ import annotations

import pytest

from serve.models.tiny import TinyModelSpec, build_tiny_model, is_built

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return build_tiny_model(out, TinyModelSpec(corpus_files=40))


def test_builds_and_reloads_offline(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_built(tiny_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    assert model.config.head_dim == 64  # vLLM's CPU build refuses smaller heads
    assert model.config.model_type == "llama"
    ids = tokenizer("def main():\n    return 0", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "def main():\n    return 0"  # byte-level: lossless
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5


def test_chat_template_marks_roles_and_the_generation_prompt(tiny_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|system|>\nBe brief.</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=True, add_generation_prompt=True
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in 5.x
    assert tokenizer.convert_tokens_to_ids("<|user|>") in list(ids)


def test_same_seed_same_weights(tmp_path):
    spec = TinyModelSpec(
        corpus_files=10, hidden_size=64, heads=1, kv_heads=1, intermediate_size=64, layers=1
    )
    a = build_tiny_model(tmp_path / "a", spec)
    b = build_tiny_model(tmp_path / "b", spec)
    wa = transformers.AutoModelForCausalLM.from_pretrained(str(a)).state_dict()
    wb = transformers.AutoModelForCausalLM.from_pretrained(str(b)).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_builds_under_the_data_dir(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from forge.cli import app

    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["models", "build-tiny"])
    assert result.exit_code == 0, result.output
    assert is_built(tmp_path / "models" / "tiny-llama")


def test_cli_builds_an_adapter_that_fits_the_tiny_model(tmp_path, monkeypatch, tiny_model):
    import json

    from typer.testing import CliRunner

    from forge.cli import app
    from serve.models.adapters import check_adapter

    result = CliRunner().invoke(
        app,
        ["models", "build-adapter", "--base", str(tiny_model), "--out", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tiny_model / "config.json").read_text())
    assert check_adapter(tmp_path / "a", config, max_rank=8).rank == 8
