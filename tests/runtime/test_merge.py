"""Merging folds a stack into the base weights; unmerging restores them bit for bit."""

import pytest
import torch
from factories import tiny_bert, tiny_llama, token_batch
from safetensors.torch import load_file, save_file

from lorakit import MergeError, MultiAdapterModel

# Merged and unmerged outputs differ by the rounding of W + delta to the model's dtype,
# which grows through the layers: bfloat16 keeps 8 significant bits, float16 11, and the
# logits here reach about 4, so one bfloat16 step there is 0.03.
TOLERANCE = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1e-1, "atol": 1e-1},
    torch.float16: {"rtol": 2e-2, "atol": 2e-2},
}


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_equal(model, state):
    current = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(current[key], value, rtol=0, atol=0, equal_nan=True, msg=f"{key} changed")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_unmerge_restores_bits(adapter_dir, dtype):
    model = tiny_llama(dtype=dtype)
    runtime = MultiAdapterModel(model)
    runtime.load_adapter(adapter_dir / "llama_qv", "a")
    runtime.load_adapter(adapter_dir / "llama_vo", "b")
    runtime.load_adapter(adapter_dir / "llama_head", "h")
    before = {k: v for k, v in snapshot(model).items() if "lora_" not in k and ".copies." not in k}
    ids = token_batch()
    for cycle in range(3):
        runtime.activate({"a": 0.7, "b": -1.3, "h": 0.5})
        with torch.no_grad():
            unmerged = model(input_ids=ids).logits
        runtime.merge()
        with torch.no_grad():
            merged = model(input_ids=ids).logits
        torch.testing.assert_close(merged.float(), unmerged.float(), **TOLERANCE[dtype])
        runtime.unmerge()
        assert_bit_equal(model, before)


def test_merge_of_bert_head_and_bias(adapter_dir):
    runtime = MultiAdapterModel(tiny_bert())
    runtime.load_adapter(adapter_dir / "bert_bias", "bias")
    runtime.load_adapter(adapter_dir / "bert_a", "a")
    runtime.activate({"bias": 1.0, "a": 0.5})
    ids = token_batch()
    with torch.no_grad():
        unmerged = runtime(input_ids=ids).logits
        runtime.merge()
        merged = runtime(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


def test_non_finite_delta_is_refused(adapter_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapter_dir / "llama_qv" / "adapter_config.json").read_text())
    tensors = load_file(adapter_dir / "llama_qv" / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("layers.1.self_attn.v_proj.lora_B.weight"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, broken / "adapter_model.safetensors")
    model = tiny_llama()
    runtime = MultiAdapterModel(model)
    runtime.load_adapter(adapter_dir / "llama_vo", "good")
    runtime.load_adapter(broken, "broken")
    before = snapshot(model)
    with pytest.raises(MergeError, match=r"non-finite weights in 1 tensors \(model.layers.1.self_attn.v_proj"):
        runtime.merge({"good": 1.0, "broken": 1.0})
    assert_bit_equal(model, before)
    assert runtime.merged is None


def test_merge_state_errors(adapter_dir):
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "a")
    runtime.load_adapter(adapter_dir / "llama_vo", "b")
    with pytest.raises(MergeError, match="Nothing is merged"):
        runtime.unmerge()
    runtime.merge("a")
    with pytest.raises(MergeError, match="already merged"):
        runtime.merge("b")
    with pytest.raises(MergeError, match="call unmerge"):
        runtime.activate("b")
    with pytest.raises(MergeError, match="route rows"):
        runtime(input_ids=token_batch(batch=2), adapter_names=["a", "b"])
    with pytest.raises(MergeError, match="merged into the base weights; call unmerge"):
        runtime.unload_adapter("a")
    runtime.unmerge()
    runtime.unload_adapter("a")
    assert runtime.adapters == ["b"]
    assert runtime.active == {}
