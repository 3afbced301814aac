"""Bad adapter files and mismatched models give clear errors and change nothing."""

import json
import shutil

import pytest
import torch
from factories import make_peft_adapter, tiny_bert, tiny_llama, token_batch
from safetensors.torch import load_file, save_file

from lorakit import (
    AdapterFormatError,
    AdapterMismatchError,
    MultiAdapterModel,
    UnsafeFileError,
    UnsupportedAdapterError,
    read_adapter,
)


def copy_adapter(source, target):
    shutil.copytree(source, target)
    return target


@pytest.fixture
def runtime_and_state():
    model = tiny_llama()
    runtime = MultiAdapterModel(model)
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return runtime, model, state, modules


def assert_unchanged(runtime, model, state, modules):
    assert runtime.adapters == []
    assert dict(model.named_modules()).keys() == modules.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_folder(runtime_and_state, tmp_path):
    runtime, *_ = runtime_and_state
    with pytest.raises(AdapterFormatError, match="does not exist"):
        runtime.load_adapter(tmp_path / "nope")


def test_folder_that_is_not_an_adapter(runtime_and_state, tmp_path):
    runtime, *_ = runtime_and_state
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AdapterFormatError, match=r"adapter_config.json is missing \(found: notes.txt\)"):
        runtime.load_adapter(tmp_path)


def test_corrupt_safetensors(runtime_and_state, adapter_dir, tmp_path):
    runtime, model, state, modules = runtime_and_state
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "corrupt")
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(AdapterFormatError, match="not a readable safetensors file"):
        runtime.load_adapter(folder)
    assert_unchanged(runtime, model, state, modules)


def test_pickle_needs_trust(runtime_and_state, adapter_dir, tmp_path):
    runtime, model, state, modules = runtime_and_state
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "pickled")
    tensors = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()
    torch.save(tensors, folder / "adapter_model.bin")
    with pytest.raises(UnsafeFileError, match="pickle file that can run code.*trust_pickle=True"):
        runtime.load_adapter(folder)
    assert_unchanged(runtime, model, state, modules)
    assert runtime.load_adapter(folder, trust_pickle=True) == "pickled"


def test_adapter_for_another_model(runtime_and_state, adapter_dir):
    runtime, model, state, modules = runtime_and_state
    with pytest.raises(AdapterMismatchError) as error:
        runtime.load_adapter(adapter_dir / "bert_a")
    message = str(error.value)
    assert "5 adapter modules not found in the model: bert.encoder.layer.0.attention.self.query" in message
    assert "q_proj" in message  # names that do exist
    assert "the model was not changed" in message
    assert_unchanged(runtime, model, state, modules)


def test_wrong_shapes(runtime_and_state, tmp_path):
    runtime, model, state, modules = runtime_and_state
    bigger = make_peft_adapter("llama", tmp_path / "big", 1, base_seed=0)
    config = json.loads((bigger / "adapter_config.json").read_text())
    tensors = load_file(bigger / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.randn(4, 48)
    save_file(tensors, bigger / "adapter_model.safetensors")
    (bigger / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="q_proj: lora_A expects 48 inputs but the layer has 32"):
        runtime.load_adapter(bigger)
    assert_unchanged(runtime, model, state, modules)


def test_vocabulary_size_mismatch(runtime_and_state, adapter_dir, tmp_path):
    runtime, model, state, modules = runtime_and_state
    folder = copy_adapter(adapter_dir / "llama_embed", tmp_path / "vocab")
    tensors = load_file(folder / "adapter_model.safetensors")
    key = "base_model.model.model.embed_tokens.lora_embedding_A"
    tensors[key] = torch.randn(4, 130)
    tensors.pop("base_model.model.model.embed_tokens.base_layer.weight", None)
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterMismatchError, match="vocabulary size 130 in the adapter but 128 in the model"):
        runtime.load_adapter(folder)
    assert_unchanged(runtime, model, state, modules)


def test_nan_weights_load_but_do_not_merge(adapter_dir, tmp_path):
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "nan")
    tensors = load_file(folder / "adapter_model.safetensors")
    next(iter(tensors.values()))[0, 0] = float("nan")
    save_file(tensors, folder / "adapter_model.safetensors")
    model = tiny_llama()
    runtime = MultiAdapterModel(model)
    runtime.load_adapter(folder, "nan")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Exception, match="non-finite"):
        runtime.merge("nan")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_dora_is_refused(adapter_dir, tmp_path):
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "dora")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["use_dora"] = True
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedAdapterError, match="use_dora=True \\(DoRA"):
        read_adapter(folder)


def test_unknown_keys_are_listed(adapter_dir, tmp_path):
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "extra")
    tensors = load_file(folder / "adapter_model.safetensors")
    tensors["base_model.model.model.norm.weight"] = torch.ones(32)
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterFormatError, match="1 keys that are neither LoRA factors.*model.norm.weight"):
        read_adapter(folder)


def test_rank_disagreeing_with_config(adapter_dir, tmp_path):
    folder = copy_adapter(adapter_dir / "llama_qv", tmp_path / "rank")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 16
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterFormatError, match="rank 4 in its tensors but r=16 in its config"):
        read_adapter(folder)


def test_head_of_wrong_label_count(adapter_dir):
    runtime = MultiAdapterModel(tiny_bert(num_labels=2))
    with pytest.raises(AdapterMismatchError, match=r"classifier.weight: shape \(3, 32\) in the adapter but \(2, 32\)"):
        runtime.load_adapter(adapter_dir / "bert_a")


def test_unknown_name_lists_loaded(adapter_dir):
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "one")
    with pytest.raises(KeyError, match="'two' is not loaded; loaded adapters: one"):
        runtime.activate("two")
    with pytest.raises(Exception, match="Invalid adapter name 'a.b'"):
        runtime.load_adapter(adapter_dir / "llama_vo", "a.b")


def test_failed_load_midway_leaves_model_unchanged(adapter_dir, monkeypatch):
    model = tiny_llama()
    runtime = MultiAdapterModel(model)
    modules = dict(model.named_modules()).keys()
    from lorakit.runtime import layers

    calls = {"count": 0}
    original = layers.LoraLayer.add

    def failing_add(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise RuntimeError("simulated out-of-memory")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(layers.LoraLayer, "add", failing_add)
    with pytest.raises(RuntimeError, match="simulated"):
        runtime.load_adapter(adapter_dir / "llama_qv")
    assert dict(model.named_modules()).keys() == modules
    assert runtime.adapters == []
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, tiny_llama()(input_ids=ids).logits, rtol=0, atol=0)
