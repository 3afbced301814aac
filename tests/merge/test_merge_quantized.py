"""Merging into a quantized base: a tiny LLaMA stored as a 4-bit (Q4_1) GGUF file.

transformers dequantizes GGUF weights on load when no GGUF kernel is installed, as
here, and keeps the model marked as quantized (it refuses to save it).
"""

from __future__ import annotations

import json

import pytest
import torch
from combine_factories import input_ids, logits, make_adapter, peft_logits, reference_model, tiny_llama
from gguf_factory import write_tiny_gguf
from transformers import AutoModelForCausalLM

from lorakit.adapters.io import read_adapter
from lorakit.cli.app import main
from lorakit.errors import MergeError
from lorakit.merge import merge_to_folder, quantization_method
from lorakit.merge.quantized import unmerged_adapters

ATOL, RTOL = 2e-5, 1e-4


@pytest.fixture(scope="module")
def gguf_setup(tmp_path_factory):
    """A Q4_1 GGUF file, a loader for it and two adapters trained on it."""
    root = tmp_path_factory.mktemp("gguf")
    gguf_file = write_tiny_gguf(root / "tiny-q4_1.gguf")

    def load():
        return AutoModelForCausalLM.from_pretrained(root, gguf_file=gguf_file.name).eval()

    adapters = [
        make_adapter(load, root / "a", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        make_adapter(load, root / "b", seed=2, r=2, lora_alpha=4, target_modules=["o_proj", "down_proj"], task_type="CAUSAL_LM"),
    ]
    return gguf_file, load, adapters


def test_gguf_base_is_quantized(gguf_setup):
    _, load, _ = gguf_setup

    assert quantization_method(load()) == "gguf"
    assert quantization_method(tiny_llama()) is None


def test_quantized_base_refused_without_force(gguf_setup, tmp_path):
    gguf_file, _, adapters = gguf_setup

    with pytest.raises(MergeError, match=r"is quantized \(gguf\).*unquantized in torch.float32.*force=True \(--force\)"):
        merge_to_folder(str(gguf_file), [str(adapters[0])], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_forced_merge_matches_unmerged_model(gguf_setup, tmp_path):
    gguf_file, load, adapters = gguf_setup
    weights = [0.7, -0.4]
    report = merge_to_folder(str(gguf_file), [f"{adapters[0]}:0.7", f"{adapters[1]}:-0.4"], tmp_path / "merged", force=True)

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = input_ids()
    expected = logits(reference_model(load, adapters, weights), ids)
    torch.testing.assert_close(logits(merged, ids), expected, atol=ATOL, rtol=RTOL)
    assert report.quantization == "gguf"
    assert 0.0 <= report.measured_difference["max_abs"] < 1e-4
    assert report.measured_difference["max_abs_reference"] > 0.0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    record = json.loads((tmp_path / "merged" / "lorakit_merge.json").read_text())
    assert record["measured_difference"] == report.measured_difference


def test_unmerged_hooks_equal_peft(gguf_setup):
    _, load, adapters = gguf_setup
    model = load()
    ids = input_ids()

    with unmerged_adapters(model, [read_adapter(adapters[0])], [1.0]):
        hooked = logits(model, ids)
    torch.testing.assert_close(hooked, peft_logits(load, adapters[0], ids), atol=ATOL, rtol=RTOL)
    # The hooks are gone afterwards.
    torch.testing.assert_close(logits(model, ids), logits(load(), ids), atol=0, rtol=0)


def test_merge_command_force(gguf_setup, tmp_path, capsys):
    gguf_file, _, adapters = gguf_setup

    with pytest.raises(SystemExit) as refused:
        main(["merge", "--model", str(gguf_file), "--adapter", f"a={adapters[0]}", "--output", str(tmp_path / "m")])
    assert refused.value.code == 1
    assert "--force" in capsys.readouterr().err

    with pytest.raises(SystemExit) as forced:
        main(["merge", "--model", str(gguf_file), "--adapter", f"a={adapters[0]}", "--output", str(tmp_path / "m"), "--force"])
    assert forced.value.code == 0
    out = capsys.readouterr().out
    assert "The base was quantized (gguf); max |output difference| against the unmerged quantized model" in out
