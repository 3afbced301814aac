"""``compare`` against figures computed from dense deltas, and the command's table, JSON and plot."""

from __future__ import annotations

import json
import math

import pytest
import torch
from combine_factories import make_adapter, tiny_llama

from lorakit.adapters.io import read_adapter
from lorakit.cli.app import main
from lorakit.combine import combine_folders
from lorakit.compare import compare_adapters, compare_folders
from lorakit.errors import AdapterMismatchError


def _dense_deltas(folder) -> dict[str, torch.Tensor]:
    adapter = read_adapter(folder)
    return {path: (m.scaling * m.lora_B.double() @ m.lora_A.double()) for path, m in adapter.modules.items()}


def test_module_figures_match_dense(compare_adapters_folders):
    folders = [compare_adapters_folders["qv"], compare_adapters_folders["vo"]]
    comparison = compare_folders(folders)
    deltas = [_dense_deltas(folder) for folder in folders]

    shared = "model.layers.1.self_attn.v_proj"
    module = next(m for m in comparison.modules if m.path == shared)
    first, second = deltas[0][shared], deltas[1][shared]
    assert module.norms[0] == pytest.approx(float(first.norm()), rel=1e-5)
    assert module.norms[1] == pytest.approx(float(second.norm()), rel=1e-5)
    cosine = float((first * second).sum() / (first.norm() * second.norm()))
    assert module.cosine[0][1] == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    conflicts = float(((first * second) < 0).sum() / ((first * second) != 0).sum())
    assert module.sign_conflict[0][1] == pytest.approx(conflicts, rel=1e-6)

    only_first = next(m for m in comparison.modules if m.path == "model.layers.0.self_attn.q_proj")
    assert only_first.norms[1] is None
    assert only_first.cosine[0][1] is None
    assert only_first.sign_conflict[0][1] is None


def test_overall_figures_treat_modules_as_one_vector(compare_adapters_folders):
    folders = [compare_adapters_folders["qv"], compare_adapters_folders["vo"]]
    comparison = compare_folders(folders)
    deltas = [_dense_deltas(folder) for folder in folders]

    paths = sorted(set(deltas[0]) | set(deltas[1]))
    sizes = {path: (deltas[0].get(path, deltas[1].get(path))).numel() for path in paths}
    vectors = []
    for adapter_deltas in deltas:
        # A module the adapter does not target is a zero block of the flattened vector.
        parts = [
            adapter_deltas[path].flatten() if path in adapter_deltas else torch.zeros(sizes[path], dtype=torch.float64)
            for path in paths
        ]
        vectors.append(torch.cat(parts))
    assert comparison.norms[0] == pytest.approx(float(vectors[0].norm()), rel=1e-5)
    expected_cosine = float(vectors[0] @ vectors[1] / (vectors[0].norm() * vectors[1].norm()))
    assert comparison.cosine[0][1] == pytest.approx(expected_cosine, rel=1e-4, abs=1e-6)
    both = (vectors[0] != 0) & (vectors[1] != 0)
    expected_conflict = float(((vectors[0] * vectors[1]) < 0).sum() / both.sum())
    assert comparison.sign_conflict[0][1] == pytest.approx(expected_conflict, rel=1e-6)


def test_same_and_opposite_adapters(compare_adapters_folders, tmp_path):
    folder = compare_adapters_folders["qv"]
    negated, _ = combine_folders([folder], [-2.0], tmp_path / "negated", "linear")
    comparison = compare_folders([folder, folder, negated])

    assert comparison.names == ["qv#1", "qv#2", "negated"]
    assert comparison.cosine[0][1] == pytest.approx(1.0, abs=1e-6)
    assert comparison.sign_conflict[0][1] == 0.0
    assert comparison.cosine[0][2] == pytest.approx(-1.0, abs=1e-6)
    assert comparison.sign_conflict[0][2] == 1.0
    assert comparison.norms[2] == pytest.approx(2.0 * comparison.norms[0], rel=1e-5)


def test_without_signs(compare_adapters_folders):
    comparison = compare_folders([compare_adapters_folders["qv"], compare_adapters_folders["qv2"]], signs=False)

    assert comparison.sign_conflict is None
    assert all(module.sign_conflict is None for module in comparison.modules)
    assert all(not math.isnan(module.cosine[0][1]) for module in comparison.modules)


def test_one_adapter_is_an_error(compare_adapters_folders):
    with pytest.raises(AdapterMismatchError, match="Comparing needs at least two adapters; got 1"):
        compare_adapters([read_adapter(compare_adapters_folders["qv"])])


def test_shapes_differ_is_an_error(compare_adapters_folders, tmp_path):
    wide = make_adapter(lambda: tiny_llama(hidden=64), tmp_path / "wide", seed=9, r=2, target_modules=["q_proj"])
    with pytest.raises(AdapterMismatchError, match=r"cannot be compared:\n- Module 'model.layers.0.self_attn.q_proj' is a linear module with 64 inputs"):
        compare_folders([compare_adapters_folders["qv"], wide])


def _run(capsys, *args):
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_command_table_json_and_plot(compare_adapters_folders, tmp_path, capsys):
    folders = [compare_adapters_folders["qv"], compare_adapters_folders["vo"]]
    plot = tmp_path / "heatmap.png"

    code, out, err = _run(capsys, "compare", *folders, "--plot", plot)
    assert code == 0, err
    assert "all modules" in out
    assert "per module" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000

    code, out, _ = _run(capsys, "compare", *folders, "--json")
    figures = json.loads(out)
    assert code == 0
    assert figures["names"] == ["qv", "vo"]
    assert figures["cosine"] == compare_folders(folders).cosine


def test_compare_command_one_adapter_exits_1(compare_adapters_folders, capsys):
    code, _, err = _run(capsys, "compare", compare_adapters_folders["qv"])

    assert code == 1
    assert "at least two adapters" in err
