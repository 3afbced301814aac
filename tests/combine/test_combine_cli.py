"""``lorakit combine`` on the command line, and the lorakit_combine.json record it writes."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from combine_factories import input_ids, logits, peft_logits, reference_model, tiny_llama

from lorakit.cli.app import main
from lorakit.combine import METHODS, RECORD_NAME
from lorakit.runtime import MultiAdapterModel


@pytest.fixture
def run_cli(capsys):
    """Run ``lorakit ARGS`` in-process; return (exit code, stdout, stderr)."""

    def run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_combine_command_writes_adapter_and_record(adapters, tmp_path, run_cli):
    folders = [adapters["qv"], adapters["vo_rslora"]]
    output = tmp_path / "combined"
    code, out, err = run_cli("combine", *folders, "--weights", "0.5,-1", "--method", "svd", "--rank", "4", "-o", output)

    assert code == 0, err
    assert f"Wrote {output} with method svd" in out
    record = json.loads((output / RECORD_NAME).read_text())
    assert record["method"] == "svd"
    assert record["weights"] == [0.5, -1.0]
    assert record["rank"] == 4
    assert record["density"] is None
    assert [entry["path"] for entry in record["inputs"]] == [str(f.resolve()) for f in folders]
    for entry, folder in zip(record["inputs"], folders):
        assert entry["sha256"]["adapter_model.safetensors"] == _sha256(folder / "adapter_model.safetensors")
        assert entry["sha256"]["adapter_config.json"] == _sha256(folder / "adapter_config.json")
    v_proj = record["modules"]["model.layers.0.self_attn.v_proj"]
    assert v_proj["input_ranks"] == [4, 8]
    assert v_proj["rank"] == 4
    assert 0.0 < v_proj["relative_error"] < 1.0
    assert record["max_relative_error"] == max(m["relative_error"] for m in record["modules"].values())


def test_combined_adapter_loads_in_runtime_and_peft(adapters, tmp_path, run_cli):
    folders = [adapters["qv"], adapters["vo_rslora"], adapters["pattern"]]
    output = tmp_path / "combined"
    code, _, err = run_cli("combine", *folders, "--weights", "0.5,1,-2", "-o", output)
    assert code == 0, err

    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.5, 1.0, -2.0]), ids)
    runtime = MultiAdapterModel(tiny_llama())
    runtime.activate(runtime.load_adapter(output))
    with torch.no_grad():
        torch.testing.assert_close(runtime(input_ids=ids).logits, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=2e-5, rtol=1e-4)


def test_dare_command_is_reproducible(adapters, tmp_path, run_cli):
    folders = [adapters["qv"], adapters["vo_rslora"]]
    arguments = ("--weights", "1,1", "--method", "dare_ties", "--density", "0.5", "--seed", "7")
    assert run_cli("combine", *folders, *arguments, "-o", tmp_path / "first")[0] == 0
    assert run_cli("combine", *folders, *arguments, "-o", tmp_path / "second")[0] == 0

    first = (tmp_path / "first" / "adapter_model.safetensors").read_bytes()
    assert first == (tmp_path / "second" / "adapter_model.safetensors").read_bytes()
    record = json.loads((tmp_path / "first" / RECORD_NAME).read_text())
    assert record["seed"] == 7
    assert record["majority_sign"] == "total"


def test_json_report(adapters, tmp_path, run_cli):
    code, out, _ = run_cli("combine", adapters["qv"], "--weights", "1", "-o", tmp_path / "out", "--json")

    report = json.loads(out)
    assert code == 0
    assert report["method"] == "linear"
    assert report["max_relative_error"] == 0.0


def test_list_methods(run_cli):
    code, out, _ = run_cli("combine", "--list-methods")

    assert code == 0
    for name, method in METHODS.items():
        assert name in out
        assert f"reference: {method.reference}" in out


def test_output_exists_exits_1(adapters, tmp_path, run_cli):
    (tmp_path / "out").mkdir()
    code, _, err = run_cli("combine", adapters["qv"], "--weights", "1", "-o", tmp_path / "out")

    assert code == 1
    assert "already exists" in err
    assert "--overwrite" in err


def test_weights_count_exits_1(adapters, tmp_path, run_cli):
    code, _, err = run_cli("combine", adapters["qv"], adapters["pattern"], "--weights", "1", "-o", tmp_path / "out")

    assert code == 1
    assert "Got 1 weights for 2 adapters" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--weights", "1,x"), "'x' is not a number"),
        (("--weights", "1", "--method", "average"), "'average' is not one of"),
        (("--weights", "1", "--rank", "0"), "--rank"),
    ],
)
def test_usage_errors_exit_2(adapters, tmp_path, run_cli, arguments, message):
    code, _, err = run_cli("combine", adapters["qv"], *arguments, "-o", tmp_path / "out")

    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()
