"""Reading and writing PEFT folders: round trips, atomic writes, hub names offline."""

import json

import pytest
import torch
from factories import tiny_llama, token_batch
from peft import PeftModel

from lorakit import AdapterFormatError, OutputExistsError, read_adapter, write_adapter
from lorakit.adapters import io as adapter_io


def test_round_trip_keeps_tensors_and_config(adapter_dir, tmp_path):
    original = read_adapter(adapter_dir / "llama_pattern")
    write_adapter(original, tmp_path / "copy")
    again = read_adapter(tmp_path / "copy")
    assert again.modules.keys() == original.modules.keys()
    for path, module in original.modules.items():
        assert torch.equal(again.modules[path].lora_A, module.lora_A)
        assert again.modules[path].scaling == module.scaling
    config = json.loads((tmp_path / "copy" / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"v_proj": 2}
    assert config["alpha_pattern"] == {"down_proj": 3}


def test_changed_scalings_get_explicit_patterns(adapter_dir, tmp_path):
    adapter = read_adapter(adapter_dir / "llama_qv")
    path = "model.layers.1.self_attn.v_proj"
    adapter.modules[path].scaling = 0.3
    adapter.modules[path].lora_A = adapter.modules[path].lora_A[:3]
    adapter.modules[path].lora_B = adapter.modules[path].lora_B[:, :3]
    write_adapter(adapter, tmp_path / "edited")
    reread = read_adapter(tmp_path / "edited")
    assert reread.modules[path].r == 3
    assert reread.modules[path].scaling == pytest.approx(0.3)
    assert reread.modules["model.layers.0.self_attn.q_proj"].scaling == 2.0
    reference = tiny_llama()
    with torch.no_grad():
        for module_path, module in adapter.modules.items():
            reference.get_submodule(module_path).weight += module.delta()
    peft_model = PeftModel.from_pretrained(tiny_llama(), tmp_path / "edited").eval()
    ids = token_batch()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_existing_output_is_refused(adapter_dir, tmp_path):
    adapter = read_adapter(adapter_dir / "llama_qv")
    write_adapter(adapter, tmp_path / "out")
    with pytest.raises(OutputExistsError, match="already exists; choose another path or pass overwrite=True"):
        write_adapter(adapter, tmp_path / "out")
    write_adapter(adapter, tmp_path / "out", overwrite=True)
    assert read_adapter(tmp_path / "out").modules.keys() == adapter.modules.keys()


def test_failed_write_leaves_nothing(adapter_dir, tmp_path, monkeypatch):
    adapter = read_adapter(adapter_dir / "llama_qv")

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(adapter_io, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_adapter(adapter, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_folder(adapter_dir, tmp_path, monkeypatch):
    adapter = read_adapter(adapter_dir / "llama_qv")
    write_adapter(adapter, tmp_path / "out")
    before = (tmp_path / "out" / "adapter_model.safetensors").read_bytes()
    monkeypatch.setattr(adapter_io, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_adapter(adapter, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_hub_name_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterFormatError, match="downloading it from the Hugging Face hub failed"):
        read_adapter("someone/some-lora-adapter")


def test_file_path_instead_of_folder(adapter_dir):
    with pytest.raises(AdapterFormatError, match="is a file; pass the folder"):
        read_adapter(adapter_dir / "llama_qv" / "adapter_model.safetensors")


def test_roberta_style_nested_head_copy(tmp_path):
    from lorakit.adapters.io import adapter_from_state_dict

    state = {
        "base_model.model.classifier.dense.weight": torch.zeros(4, 4),
        "base_model.model.classifier.out_proj.bias": torch.zeros(2),
        "base_model.model.roberta.layer.0.query.lora_A.weight": torch.zeros(2, 4),
        "base_model.model.roberta.layer.0.query.lora_B.weight": torch.zeros(4, 2),
    }
    adapter = adapter_from_state_dict(state, {"r": 2, "lora_alpha": 2, "modules_to_save": ["classifier"]}, "r")
    assert adapter.module_copies == {"classifier": {"dense.weight": state["base_model.model.classifier.dense.weight"], "out_proj.bias": state["base_model.model.classifier.out_proj.bias"]}}
