"""One adapter combined alone, per-module ranks, half precision and many adapters."""

from __future__ import annotations

import json

import pytest
import torch
from combine_factories import (
    input_ids,
    logits,
    make_adapter,
    peft_logits,
    reference_model,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
)
from peft import LoraConfig, get_peft_model

from lorakit.adapters.io import read_adapter
from lorakit.combine import combine_adapters, combine_folders
from lorakit.errors import UnsupportedAdapterError
from lorakit.merge import fold_adapters

ATOL, RTOL = 2e-5, 1e-4
FACTORIES = {"llama": tiny_llama, "bert": tiny_bert, "gpt2": tiny_gpt2}
SINGLE_CASES = {
    "plain": ("qv", "llama"),
    "rslora": ("vo_rslora", "llama"),
    "rank_pattern": ("pattern", "llama"),
    "embedding": ("embed", "llama"),
    "lm_head_copy": ("head", "llama"),
    "lora_bias": ("bert_bias", "bert"),
    "classifier_head": ("bert_a", "bert"),
    "conv1d": ("gpt2", "gpt2"),
}


@pytest.mark.parametrize("method", ["linear", "svd"])
@pytest.mark.parametrize("case", SINGLE_CASES, ids=list(SINGLE_CASES))
def test_single_adapter_reproduces_logits(adapters, tmp_path, case, method):
    name, model_kind = SINGLE_CASES[case]
    factory = FACTORIES[model_kind]
    output, report = combine_folders([adapters[name]], [1.0], tmp_path / "alone", method)

    ids = input_ids()
    expected = peft_logits(factory, adapters[name], ids)
    torch.testing.assert_close(peft_logits(factory, output, ids), expected, atol=ATOL, rtol=RTOL)
    assert report.max_relative_error == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", ["qv", "vo_rslora", "pattern", "bert_bias"])
def test_single_adapter_keeps_module_ranks(adapters, tmp_path, name):
    original = read_adapter(adapters[name])
    output, _ = combine_folders([adapters[name]], [1.0], tmp_path / "alone", "linear")
    combined = read_adapter(output)

    assert combined.ranks() == original.ranks()
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["use_rslora"] is False
    assert config["lora_bias"] == (name == "bert_bias")
    for path, module in combined.modules.items():
        assert module.scaling == pytest.approx(1.0)
        torch.testing.assert_close(module.delta(), original.modules[path].delta(), atol=1e-6, rtol=1e-5)


def test_rank_pattern_written_for_mixed_ranks(adapters, tmp_path):
    output, _ = combine_folders([adapters["pattern"]], [1.0], tmp_path / "alone", "linear")
    config = json.loads((output / "adapter_config.json").read_text())

    assert config["r"] == 2
    assert config["rank_pattern"] == {r"model\.layers\.0\.mlp\.down_proj": 6, r"model\.layers\.1\.mlp\.down_proj": 6}
    assert config["alpha_pattern"] == config["rank_pattern"]


def test_dora_adapter_is_rejected(tmp_path):
    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    model.save_pretrained(tmp_path / "dora")

    with pytest.raises(UnsupportedAdapterError, match="DoRA"):
        combine_folders([tmp_path / "dora"], [1.0], tmp_path / "out", "linear")
    assert not (tmp_path / "out").exists()


def test_module_ranks_differ_round_trip(adapters, tmp_path):
    folders = [adapters["q_rank4"], adapters["q_rank8"]]
    output, report = combine_folders(folders, [0.6, 0.4], tmp_path / "combined", "linear")

    assert report.modules["model.layers.0.self_attn.q_proj"].input_ranks == [4, 8]
    assert report.modules["model.layers.0.self_attn.q_proj"].rank == 12
    assert report.modules["model.layers.0.self_attn.v_proj"].rank == 12  # ranks 8 and 4
    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.6, 0.4]), ids)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=ATOL, rtol=RTOL)
    reread = read_adapter(output)
    second, _ = combine_folders([output], [1.0], tmp_path / "again", "linear")
    assert read_adapter(second).ranks() == reread.ranks()
    torch.testing.assert_close(peft_logits(tiny_llama, second, ids), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_svd_combination(tmp_path, dtype):
    def factory():
        return tiny_llama(dtype)

    folders = [
        make_adapter(factory, tmp_path / "a", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], dtype=dtype),
        make_adapter(factory, tmp_path / "b", seed=2, r=8, lora_alpha=8, target_modules=["v_proj"], dtype=dtype),
    ]
    inputs = [read_adapter(folder) for folder in folders]
    assert all(adapter.dtype == dtype for adapter in inputs)
    combined, report = combine_adapters(inputs, [0.5, 0.5], "svd", rank=4)

    module = combined.modules["model.layers.0.self_attn.v_proj"]
    assert module.lora_A.dtype == dtype
    assert module.r == 4
    assert report.modules["model.layers.0.self_attn.v_proj"].relative_error > 0.0
    # The truncation itself ran in float32: the same inputs upcast give the same factors.
    upcast = [read_adapter(folder) for folder in folders]
    for adapter in upcast:
        for m in adapter.modules.values():
            m.lora_A, m.lora_B = m.lora_A.float(), m.lora_B.float()
    reference, _ = combine_adapters(upcast, [0.5, 0.5], "svd", rank=4)
    reference_module = reference.modules["model.layers.0.self_attn.v_proj"]
    torch.testing.assert_close(module.lora_A, reference_module.lora_A.to(dtype), atol=0, rtol=0)
    torch.testing.assert_close(module.lora_B, reference_module.lora_B.to(dtype), atol=0, rtol=0)


def test_five_adapters_concatenate_and_truncate(tmp_path):
    def factory():
        return tiny_llama(hidden=64)

    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
    folders = [
        make_adapter(factory, tmp_path / f"a{i}", seed=10 + i, r=8, lora_alpha=16, target_modules=attention)
        for i in range(5)
    ]
    weights = [0.2, 0.4, -0.3, 1.0, 0.5]
    concatenated, report = combine_folders(folders, weights, tmp_path / "concat", "linear")
    assert {module.rank for module in report.modules.values()} == {40}

    ids = input_ids()
    expected = logits(reference_model(factory, folders, weights), ids)
    torch.testing.assert_close(peft_logits(factory, concatenated, ids), expected, atol=ATOL, rtol=RTOL)

    _, svd_report = combine_folders(folders, weights, tmp_path / "svd", "svd", rank=8)
    assert {module.rank for module in svd_report.modules.values()} == {8}
    assert all(0.0 < module.relative_error < 1.0 for module in svd_report.modules.values())

    # Merging the concatenated adapter stores rank-40 factors, not a dense delta per adapter.
    combined = read_adapter(concatenated)
    q_proj = combined.modules["model.layers.0.self_attn.q_proj"]
    assert q_proj.lora_A.numel() + q_proj.lora_B.numel() == 40 * (64 + 64)
    merged = factory()
    fold_adapters(merged, [combined], [1.0])
    torch.testing.assert_close(logits(merged, ids), expected, atol=ATOL, rtol=RTOL)
