"""MultiLoraModel: each row of a batch through its own adapter (checked against PEFT's own
forward), adapters in and out in place, and bad adapters refused before anything changes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from forge.errors import InvalidRequest
from serve.models.multi_lora import GatheredLoraLinear, MultiLoraModel, read_adapter


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


def unwrapped(model) -> bool:
    return not any(isinstance(m, GatheredLoraLinear) for m in model.modules())


def peft_logits(base_path, path):
    """The reference: PEFT's own forward over a fresh copy of the base model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(base_path)
    reference = PeftModel.from_pretrained(fresh, str(path)).eval()
    with torch.inference_mode():
        return reference(input_ids=IDS).logits


def test_rows_run_through_their_own_adapters_and_the_last_one_out_unwraps(base, adapter_dirs):
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add("support", read_adapter(adapter_dirs["support"]))
    model.add("legal", read_adapter(adapter_dirs["legal"]))
    alone = {a: logits(model, [a] * 3)[0] for a in ("support", "legal")}
    mixed = logits(model, ["support", None, "legal"])
    torch.testing.assert_close(mixed[0], alone["support"])
    torch.testing.assert_close(mixed[1], plain[1])
    torch.testing.assert_close(mixed[2], alone["legal"])
    assert not torch.allclose(alone["support"], plain[0])

    model.remove("support")  # the first: PEFT's active adapter
    torch.testing.assert_close(logits(model, ["legal", None, None])[0], alone["legal"])
    model.remove("legal")
    assert model.adapters == [] and unwrapped(base)  # the plain model again
    torch.testing.assert_close(logits(model, [None] * 3), plain)


@pytest.mark.parametrize("loaded_first", [[], ["legal"]])
def test_a_bad_adapter_is_refused_before_the_model_changes(
    base, adapter_dirs, broken_adapter, loaded_first
):
    from serve.models.multi_lora import LoraWeights

    model = MultiLoraModel(base)
    for name in loaded_first:
        model.add(name, read_adapter(adapter_dirs[name]))
    before = logits(model, [None, *loaded_first, None][:3])
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises
        read_adapter(broken_adapter)
    good = read_adapter(adapter_dirs["support"]).pairs
    first, *_ = good
    a, b = good[first]
    wrong = LoraWeights({**good, "model.layers.1.mlp.down_proj": (a, b)})  # 256 wide, not 512
    with pytest.raises(InvalidRequest) as err:
        model.add("support", wrong)
    assert err.value.code == "adapter_base_mismatch"
    assert model.adapters == loaded_first
    torch.testing.assert_close(logits(model, [None, *loaded_first, None][:3]), before)
    for name in loaded_first:
        model.remove(name)
    assert unwrapped(base)


def test_removing_the_first_adapter_when_the_others_target_other_modules(
    base, adapter_dirs, tmp_path, tiny_model
):
    """Adapters wrapping different layers: each layer holds a slot for every adapter
    (zeros for those that leave it alone), whichever goes first."""
    from serve.models.tiny import build_tiny_adapter

    mlp = build_tiny_adapter(
        tiny_model, tmp_path / "mlp", seed=5, target_modules=("gate_proj", "down_proj")
    )
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add("support", read_adapter(adapter_dirs["support"]))  # q, v, o
    model.add("mlp", read_adapter(mlp))
    alone = logits(model, ["mlp"] * 3)[0]
    torch.testing.assert_close(alone, peft_logits(tiny_model, mlp)[0], rtol=1e-4, atol=1e-4)
    mixed = logits(model, ["support", "mlp", None])
    torch.testing.assert_close(mixed[1], alone)
    model.remove("support")
    mixed = logits(model, ["mlp", None, None])
    torch.testing.assert_close(mixed[0], alone)
    torch.testing.assert_close(mixed[1:], plain[1:])
    model.remove("mlp")


@pytest.mark.parametrize("name", ["support.v2", "__base__"])
def test_any_registrable_name_is_an_adapter_of_its_own(base, adapter_dirs, name):
    """PEFT refuses dots in names and reads ``__base__`` as no adapter; here a name is
    only a key."""
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    model.add(name, read_adapter(adapter_dirs["support"]))
    out = logits(model, [name, None, None])
    assert not torch.allclose(out[0], plain[0])
    torch.testing.assert_close(out[1:], plain[1:])
    model.remove(name)
    assert model.adapters == []


def test_each_row_matches_peft_on_its_own_adapter(base, adapter_dirs, tmp_path, tiny_model):
    """Against PEFT's forward: ranks 8 and 4, and an rsLoRA adapter with per-module ranks."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        use_rslora=True,
        rank_pattern={"v_proj": 2},
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(fresh, config).save_pretrained(tmp_path / "rs")
    paths = {**{n: adapter_dirs[n] for n in ("support", "legal")}, "rs": tmp_path / "rs"}
    model = MultiLoraModel(base)
    for name, path in paths.items():
        model.add(name, read_adapter(path))
    mixed = logits(model, ["rs", "support", "legal"])
    for row, name in enumerate(["rs", "support", "legal"]):
        reference = peft_logits(tiny_model, paths[name])[row]
        torch.testing.assert_close(mixed[row], reference, rtol=1e-4, atol=1e-4)
    for name in paths:
        model.remove(name)
    assert unwrapped(base)


def test_an_adapter_on_an_embedding_is_400_and_changes_nothing(base, tmp_path, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    get_peft_model(fresh, config).save_pretrained(tmp_path / "emb")
    model = MultiLoraModel(base)
    with pytest.raises(InvalidRequest) as err:
        model.add("emb", read_adapter(tmp_path / "emb"))
    assert err.value.status_code == 400 and err.value.code == "unsupported_adapter"
    assert model.adapters == [] and unwrapped(base)


@pytest.mark.parametrize("alpha", [None, 0])
def test_lora_alpha_unset_or_zero_scales_as_peft_does(
    base, adapter_dirs, tmp_path, tiny_model, alpha
):
    path = shutil.copytree(adapter_dirs["legal"], tmp_path / "alpha")  # rank 4
    config = json.loads((path / "adapter_config.json").read_text())
    config.pop("lora_alpha")
    if alpha is not None:
        config["lora_alpha"] = alpha
    (path / "adapter_config.json").write_text(json.dumps(config))
    model = MultiLoraModel(base)
    model.add("a", read_adapter(path))
    out = logits(model, ["a"] * 3)
    model.remove("a")
    torch.testing.assert_close(out, peft_logits(tiny_model, path), rtol=1e-4, atol=1e-4)


def test_a_failed_install_leaves_nothing_for_the_slots_next_adapter(
    base, adapter_dirs, tiny_model, monkeypatch
):
    model = MultiLoraModel(base)
    plain = logits(model, [None] * 3)
    calls = 0
    real_put = GatheredLoraLinear.put

    def failing_put(self, slot, a, b):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise torch.OutOfMemoryError("simulated")
        real_put(self, slot, a, b)

    monkeypatch.setattr(GatheredLoraLinear, "put", failing_put)
    with pytest.raises(torch.OutOfMemoryError):
        model.add("support", read_adapter(adapter_dirs["support"]))
    monkeypatch.undo()
    assert model.adapters == [] and unwrapped(base)
    torch.testing.assert_close(logits(model, [None] * 3), plain)
    model.add("legal", read_adapter(adapter_dirs["legal"]))  # the same slot
    reference = peft_logits(tiny_model, adapter_dirs["legal"])
    torch.testing.assert_close(logits(model, ["legal"] * 3), reference, rtol=1e-4, atol=1e-4)
    model.remove("legal")


def test_a_path_into_a_wrapper_is_400_and_leaves_the_layer_usable(base, adapter_dirs):
    from serve.models.multi_lora import LoraWeights

    model = MultiLoraModel(base)
    support = read_adapter(adapter_dirs["support"])
    model.add("support", support)
    module, (a, b) = next(iter(support.pairs.items()))
    with pytest.raises(InvalidRequest):
        model.add("sneaky", LoraWeights({module + ".base": (a, b)}))
    model.remove("support")
    assert unwrapped(base)
    model.add("support", support)  # the layer is still a plain linear to wrap
    model.remove("support")


def test_a_layer_that_sees_the_rows_flattened_gets_each_rows_update():
    from serve.models.multi_lora import LoraRows

    torch.manual_seed(0)
    rows = LoraRows()
    layer = GatheredLoraLinear(torch.nn.Linear(8, 6), rows)
    layer.put(1, torch.randn(2, 8), torch.randn(6, 2))
    rows.slots = torch.tensor([1, 0, 1])
    x = torch.randn(3, 5, 8)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x.reshape(15, 8)), layer(x).reshape(15, 6))


def test_row_slots_belong_to_the_thread_that_set_them():
    """transformers' continuous batch runs the same wrapped layers on its own thread: it
    must see no slots (the base model) while the padded batch's step has them set."""
    import threading

    from serve.models.multi_lora import LoraRows

    rows = LoraRows()
    rows.slots = torch.tensor([1, 0])
    seen = []
    other = threading.Thread(target=lambda: seen.append(rows.slots))
    other.start()
    other.join()
    assert seen == [None] and rows.slots is not None
