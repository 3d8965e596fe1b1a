"""MultiLoraModel: each row of a batch through its own adapter, adapters in and out in
place, and a failed load leaving no trace in the other rows."""

from __future__ import annotations

import shutil

import pytest
import torch

from serve.models.multi_lora import MultiLoraModel


@pytest.fixture(scope="module")
def base(tiny_model):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(tiny_model).eval()


@pytest.fixture
def broken_adapter(adapter_dirs, tmp_path):
    """A valid adapter config whose weights file is cut short."""
    path = shutil.copytree(adapter_dirs["support"], tmp_path / "broken")
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return path


IDS = torch.tensor([[5, 9, 14, 20, 31, 7]] * 3)


def logits(model, adapters):
    with torch.inference_mode():
        return model(adapters, input_ids=IDS).logits


def test_rows_run_through_their_own_adapters_and_the_last_one_out_unwraps(base, adapter_dirs):
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add("support", adapter_dirs["support"])
    model.add("legal", adapter_dirs["legal"])
    alone = {a: logits(model, [a] * 3)[0] for a in ("support", "legal")}
    mixed = logits(model, ["support", None, "legal"])
    torch.testing.assert_close(mixed[0], alone["support"])
    torch.testing.assert_close(mixed[1], plain[1])
    torch.testing.assert_close(mixed[2], alone["legal"])
    assert not torch.allclose(alone["support"], plain[0])

    model.remove("support")  # the first: PEFT's active adapter
    torch.testing.assert_close(logits(model, ["legal", None, None])[0], alone["legal"])
    model.remove("legal")
    assert model.adapters == [] and model._peft is None
    assert not any("lora" in n for n, _ in base.named_modules())  # wrappers gone
    torch.testing.assert_close(logits(model, [None] * 3), plain)


@pytest.mark.parametrize("loaded_first", [[], ["legal"]])
def test_a_failed_load_leaves_the_other_rows_as_they_were(
    base, adapter_dirs, broken_adapter, loaded_first
):
    model = MultiLoraModel(base)
    for name in loaded_first:
        model.add(name, adapter_dirs[name])
    before = logits(model, [None, *loaded_first, None][:3])
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises
        model.add("broken", broken_adapter)
    assert "broken" not in model.adapters
    torch.testing.assert_close(logits(model, [None, *loaded_first, None][:3]), before)
    for name in loaded_first:
        model.remove(name)
    assert not any("lora" in n for n, _ in base.named_modules())
    assert not hasattr(base, "peft_config")  # no ghost of "broken" for the next load
    model.add("legal", adapter_dirs["legal"])
    assert model.adapters == ["legal"]
    model.remove("legal")


def test_removing_the_first_adapter_when_the_others_target_other_modules(
    base, adapter_dirs, tmp_path, tiny_model
):
    """PEFT left the deleted adapter active when the remaining one wraps other modules,
    and every forward then failed, base rows included."""
    from serve.models.tiny import build_tiny_adapter

    mlp = build_tiny_adapter(
        tiny_model, tmp_path / "mlp", seed=5, target_modules=("gate_proj", "down_proj")
    )
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add("support", adapter_dirs["support"])  # q, v, o
    model.add("mlp", mlp)
    alone = logits(model, ["mlp"] * 3)[0]
    model.remove("support")
    mixed = logits(model, ["mlp", None, None])
    torch.testing.assert_close(mixed[0], alone)
    torch.testing.assert_close(mixed[1:], plain[1:])
    model.remove("mlp")


@pytest.mark.parametrize("name", ["support.v2", "__base__"])
def test_any_registrable_name_is_an_adapter_of_its_own(base, adapter_dirs, name):
    """PEFT refuses dots in names and reads ``__base__`` as no adapter: public names are
    mapped to names of our own."""
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add(name, adapter_dirs["support"])
    out = logits(model, [name, None, None])
    assert not torch.allclose(out[0], plain[0])
    torch.testing.assert_close(out[1:], plain[1:])
    model.remove(name)
    assert model.adapters == []
