"""``lorakit merge`` on the command line."""

from __future__ import annotations

import json

import pytest
import torch
from combine_factories import input_ids, logits, reference_model, tiny_llama
from transformers import AutoModelForCausalLM

from lorakit.cli.app import main


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


def test_merge_command(base_folders, merge_adapters, tmp_path, run_cli):
    folders = [merge_adapters["llama_qv"], merge_adapters["llama_head"]]
    code, out, err = run_cli(
        "merge", "--model", base_folders["llama"], "--adapter", f"qv={folders[0]}:0.25",
        "--adapter", f"head={folders[1]}", "--output", tmp_path / "merged",
    )

    assert code == 0, err
    assert f"Wrote {tmp_path / 'merged'}: 2 adapters merged" in out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.25, 1.0]), ids)
    torch.testing.assert_close(logits(merged, ids), expected, atol=2e-5, rtol=1e-4)


def test_merge_command_json(base_folders, merge_adapters, tmp_path, run_cli):
    code, out, _ = run_cli(
        "merge", "--model", base_folders["gpt2"], "--adapter", merge_adapters["gpt2"], "-o", tmp_path / "m", "--json"
    )

    report = json.loads(out)
    assert code == 0
    assert report["lora_modules"] == 6  # c_attn, attn.c_proj and mlp.c_proj in 2 layers
    assert report["dtype"] == "float32"


def test_bad_adapter_spec_exits_2(base_folders, tmp_path, run_cli):
    code, _, err = run_cli("merge", "--model", base_folders["llama"], "--adapter", "name=", "-o", tmp_path / "m")

    assert code == 2
    assert "expected NAME=PATH[:WEIGHT]" in " ".join(err.replace("│", " ").split())


def test_missing_adapter_folder_exits_1(base_folders, tmp_path, run_cli):
    code, _, err = run_cli("merge", "--model", base_folders["llama"], "--adapter", tmp_path / "nope", "-o", tmp_path / "m")

    assert code == 1
    assert "does not exist" in err
    assert not (tmp_path / "m").exists()
