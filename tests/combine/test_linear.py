"""``linear`` and ``svd`` against weighted sums built by hand and from PEFT's own deltas."""

from __future__ import annotations

import json

import pytest
import torch
from combine_factories import input_ids, logits, make_adapter, peft_logits, reference_model, tiny_llama

from lorakit.adapters.io import read_adapter
from lorakit.adapters.model import Adapter, LoraModule
from lorakit.combine import combine_adapters, combine_folders

# float32 logits of the tiny models: sums of a few hundred products of values near 1.
ATOL, RTOL = 2e-5, 1e-4

LINEAR_CASES = {
    "two_adapters": (["qv", "vo_rslora"], [0.7, 0.3]),
    "one_of_three": (["qv", "vo_rslora", "pattern"], [1.0, 0.0, 0.0]),
    "difference": (["qv", "vo_rslora"], [1.0, -1.0]),
    "four_with_embedding": (["qv", "vo_rslora", "pattern", "embed"], [0.5, -1.5, 2.0, 0.25]),
    "five_with_head": (["qv", "vo_rslora", "pattern", "embed", "head"], [0.5, 1.0, -0.5, 2.0, 1.0]),
}


@pytest.mark.parametrize("case", LINEAR_CASES, ids=list(LINEAR_CASES))
def test_linear_matches_weighted_sum(adapters, tmp_path, case):
    names, weights = LINEAR_CASES[case]
    folders = [adapters[name] for name in names]
    output, report = combine_folders(folders, weights, tmp_path / "combined", "linear")

    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, weights), ids)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=ATOL, rtol=RTOL)
    assert report.max_relative_error == 0.0


def test_linear_rank_is_sum_of_ranks(adapters, tmp_path):
    _, report = combine_folders([adapters["qv"], adapters["vo_rslora"]], [0.7, 0.3], tmp_path / "out", "linear")

    v_proj = report.modules["model.layers.0.self_attn.v_proj"]
    assert v_proj.input_ranks == [4, 8]
    assert v_proj.rank == 12
    assert report.modules["model.layers.0.self_attn.q_proj"].rank == 4
    assert report.modules["model.layers.0.self_attn.o_proj"].rank == 8


def test_zero_weight_adapter_is_left_out(adapters, tmp_path):
    _, report = combine_folders(
        [adapters["qv"], adapters["vo_rslora"], adapters["pattern"]], [1.0, 0.0, 0.0], tmp_path / "out", "linear"
    )

    assert set(report.modules) == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
    assert all(module.rank == 4 for module in report.modules.values())


@pytest.mark.parametrize("method", ["linear", "svd"])
def test_same_adapter_difference_is_base(adapters, tmp_path, method):
    folder = adapters["qv"]
    output, report = combine_folders([folder, folder], [1.0, -1.0], tmp_path / method, method)

    ids = input_ids()
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), logits(tiny_llama(), ids), atol=1e-6, rtol=0)
    assert all(module.effective_rank == 0 for module in report.modules.values())
    combined = read_adapter(output)
    assert all(not torch.any(module.delta()) for module in combined.modules.values())


def test_same_adapter_twice_keeps_rank(adapters, tmp_path):
    folder = adapters["qv"]
    output, report = combine_folders([folder, folder], [0.25, 0.75], tmp_path / "out", "linear")

    ids = input_ids()
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), peft_logits(tiny_llama, folder, ids), atol=ATOL, rtol=RTOL)
    assert all(module.rank == 4 for module in report.modules.values())


def _module(seed: int, r: int, scaling: float, shape=(12, 10)) -> LoraModule:
    generator = torch.Generator().manual_seed(seed)
    out_features, in_features = shape
    return LoraModule(
        lora_A=torch.randn(r, in_features, generator=generator),
        lora_B=torch.randn(out_features, r, generator=generator),
        scaling=scaling,
    )


def _hand_adapters() -> list[Adapter]:
    config = {"peft_type": "LORA", "target_modules": ["proj"]}
    return [
        Adapter("a", config, {"layer.proj": _module(1, 3, 2.0), "layer.other": _module(2, 2, 0.5)}),
        Adapter("b", config, {"layer.proj": _module(3, 5, 8 / 5**0.5)}),
        Adapter("c", config, {"layer.other": _module(4, 1, 16.0)}),
    ]


def test_linear_delta_equals_hand_sum():
    adapters = _hand_adapters()
    weights = [0.5, -2.0, 3.0]
    combined, _ = combine_adapters(adapters, weights, "linear")

    for path in ("layer.proj", "layer.other"):
        expected = torch.zeros(12, 10)
        for adapter, weight in zip(adapters, weights):
            if path in adapter.modules:
                module = adapter.modules[path]
                expected += weight * module.scaling * module.lora_B @ module.lora_A
        result = combined.modules[path]
        assert result.scaling == 1.0
        torch.testing.assert_close(result.lora_B @ result.lora_A, expected, atol=1e-5, rtol=1e-5)


def test_linear_rank_truncation_is_best_approximation():
    adapters = _hand_adapters()
    weights = [0.5, -2.0, 3.0]
    combined, report = combine_adapters(adapters, weights, "linear", rank=3)

    proj = adapters[0].modules["layer.proj"], adapters[1].modules["layer.proj"]
    dense = (0.5 * proj[0].scaling * proj[0].lora_B @ proj[0].lora_A - 2.0 * proj[1].scaling * proj[1].lora_B @ proj[1].lora_A)
    U, S, Vh = torch.linalg.svd(dense.double())
    best = (U[:, :3] * S[:3]) @ Vh[:3]
    result = combined.modules["layer.proj"]
    assert result.r == 3
    torch.testing.assert_close((result.lora_B @ result.lora_A).double(), best, atol=1e-4, rtol=1e-4)
    expected_error = float(S[3:].norm() / S.norm())
    assert report.modules["layer.proj"].relative_error == pytest.approx(expected_error, rel=1e-4)


def test_svd_default_rank_is_largest_input_rank():
    combined, report = combine_adapters(_hand_adapters(), [1.0, 1.0, 1.0], "svd")

    assert combined.modules["layer.proj"].r == 5  # ranks 3 and 5
    assert combined.modules["layer.other"].r == 2  # ranks 2 and 1
    assert report.modules["layer.proj"].relative_error > 0.0


def test_svd_rank_above_true_rank_is_exact():
    combined, report = combine_adapters(_hand_adapters(), [1.0, 1.0, 1.0], "svd", rank=10)

    assert combined.modules["layer.proj"].r == 8  # the sum of two rank-3 and rank-5 deltas
    assert report.modules["layer.proj"].relative_error == pytest.approx(0.0, abs=1e-6)


def test_layer_restricted_targets_listed_by_path(adapters, tmp_path):
    layer_0 = make_adapter(tiny_llama, tmp_path / "layer_0", seed=40, r=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[0])
    folders = [layer_0, adapters["vo_rslora"]]
    output, _ = combine_folders(folders, [1.0, 0.5], tmp_path / "combined", "linear")

    config = json.loads((output / "adapter_config.json").read_text())
    assert "model.layers.0.self_attn.q_proj" in config["target_modules"]
    assert "model.layers.1.self_attn.q_proj" not in config["target_modules"]
    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [1.0, 0.5]), ids)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=ATOL, rtol=RTOL)
