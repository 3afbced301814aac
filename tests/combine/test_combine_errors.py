"""Bad input to combine: each error names the value, what was expected and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from combine_factories import make_adapter, tiny_llama
from safetensors.torch import load_file, save_file

from lorakit.adapters.io import read_adapter
from lorakit.combine import combine_adapters, combine_folders, get_method
from lorakit.errors import CombineError, OutputExistsError


def _copy_with_config(source, target, **changes):
    shutil.copytree(source, target)
    config_path = target / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config.update(changes)
    config_path.write_text(json.dumps(config))
    return target


def test_different_base_models(adapters, tmp_path):
    other = _copy_with_config(adapters["vo_rslora"], tmp_path / "other", base_model_name_or_path="org/other-model")
    first = _copy_with_config(adapters["qv"], tmp_path / "first", base_model_name_or_path="org/base-model")

    with pytest.raises(CombineError, match=r"different base models \('first' on 'org/base-model', 'other' on 'org/other-model'\).*--allow-different-bases"):
        combine_folders([first, other], [1.0, 1.0], tmp_path / "out")
    output, _ = combine_folders([first, other], [1.0, 1.0], tmp_path / "out", allow_different_bases=True)
    assert output.exists()


def test_different_shapes(adapters, tmp_path):
    wide = make_adapter(lambda: tiny_llama(hidden=64), tmp_path / "wide", seed=5, r=4, target_modules=["q_proj"])

    with pytest.raises(CombineError, match=r"Module 'model.layers.0.self_attn.q_proj' is a linear module with 64 inputs and 64 outputs in 'wide' but a linear module with 32 inputs and 32 outputs in 'qv'"):
        combine_folders([adapters["qv"], wide], [1.0, 1.0], tmp_path / "out")


def test_unknown_method(adapters):
    with pytest.raises(CombineError, match=r"Unknown combine method 'average'; choose one of: linear, svd, ties, dare_linear, dare_ties, magnitude_prune"):
        get_method("average")
    with pytest.raises(CombineError, match="Unknown combine method 'average'"):
        combine_adapters([read_adapter(adapters["qv"])], [1.0], "average")


def test_weights_count_mismatch(adapters):
    inputs = [read_adapter(adapters["qv"]), read_adapter(adapters["vo_rslora"])]

    with pytest.raises(CombineError, match=r"Got 3 weights for 2 adapters \(qv, vo_rslora\); pass one weight per adapter"):
        combine_adapters(inputs, [1.0, 0.5, 0.2], "linear")


def test_non_finite_weight(adapters):
    with pytest.raises(CombineError, match="Weight nan of adapter 'qv' is not a finite number"):
        combine_adapters([read_adapter(adapters["qv"])], [float("nan")], "linear")


def test_all_weights_zero(adapters):
    with pytest.raises(CombineError, match="Every weight is 0"):
        combine_adapters([read_adapter(adapters["qv"])], [0.0], "linear")


def test_rank_larger_than_possible(adapters):
    # k_proj maps 32 inputs to 16 outputs (2 KV heads of 8), v_proj as well.
    inputs = [read_adapter(adapters["qv"]), read_adapter(adapters["vo_rslora"])]

    with pytest.raises(CombineError, match=r"rank=20 is larger than module 'model.layers.0.self_attn.v_proj' allows: its delta is 16 x 32, so its rank is at most 16"):
        combine_adapters(inputs, [1.0, 1.0], "svd", rank=20)


def test_rank_not_positive(adapters):
    with pytest.raises(CombineError, match="rank=0 is invalid; expected a positive integer"):
        combine_adapters([read_adapter(adapters["qv"])], [1.0], "svd", rank=0)


def test_nan_in_input(adapters, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(adapters["qv"], broken)
    weights_path = broken / "adapter_model.safetensors"
    tensors = load_file(weights_path)
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    tensors[key][0, 0] = float("nan")
    save_file(tensors, weights_path)

    with pytest.raises(CombineError, match=r"Adapter 'broken', module 'model.layers.1.self_attn.v_proj': lora_B hold NaN or infinity"):
        combine_folders([adapters["vo_rslora"], broken], [1.0, 1.0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_exists(adapters, tmp_path):
    (tmp_path / "out").mkdir()

    with pytest.raises(OutputExistsError, match=r"Output folder '.*out' already exists; choose another path or pass overwrite=True \(--overwrite\)"):
        combine_folders([adapters["qv"]], [1.0], tmp_path / "out")
    output, _ = combine_folders([adapters["qv"]], [1.0], tmp_path / "out", overwrite=True)
    assert (output / "adapter_model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folders left behind


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("ties", {}, r"Method 'ties' needs density \(--density\)"),
        ("ties", {"density": 0.0}, r"density=0.0 is invalid; expected a fraction in \(0, 1\]"),
        ("dare_linear", {"density": 1.5}, r"density=1.5 is invalid"),
        ("linear", {"density": 0.5}, r"density \(--density\) does not apply to method 'linear'; it is used by: dare_linear, dare_ties, magnitude_prune, ties"),
        ("svd", {"seed": 1}, r"seed \(--seed\) does not apply to method 'svd'"),
        ("ties", {"density": 0.5, "majority_sign": "mean"}, r"majority_sign='mean' is invalid; expected one of: total, frequency"),
    ],
)
def test_invalid_options(adapters, method, options, message):
    with pytest.raises(CombineError, match=message):
        combine_adapters([read_adapter(adapters["qv"])], [1.0], method, **options)


def test_several_problems_reported_together(adapters):
    with pytest.raises(CombineError) as raised:
        combine_adapters([read_adapter(adapters["qv"])], [1.0], "linear", density=0.5, seed=3)

    assert "density (--density) does not apply" in str(raised.value)
    assert "seed (--seed) does not apply" in str(raised.value)


def test_half_precision_overflow(adapters):
    adapter = read_adapter(adapters["qv"])
    for module in adapter.modules.values():
        module.lora_B = module.lora_B * 1e4

    with pytest.raises(CombineError, match=r"do not fit in torch.float16; store the result in float32 \(dtype=torch.float32, --dtype float32\)"):
        combine_adapters([adapter], [100.0], "linear", dtype=torch.float16)
