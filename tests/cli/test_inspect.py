import json


def test_inspect_json_fields(run_cli, adapter_dir):
    code, out, _ = run_cli("inspect", "--json", adapter_dir / "llama_pattern", adapter_dir / "bert_a")
    assert code == 0
    pattern, bert = json.loads(out)
    assert pattern["rank"]["r"] == 4
    assert pattern["rank"]["per_module"] == {"model.layers.0.self_attn.v_proj": 2, "model.layers.1.self_attn.v_proj": 2}
    assert pattern["scaling"]["per_module"]["model.layers.0.mlp.down_proj"] == 3 / 4
    assert pattern["scaling"]["per_module"]["model.layers.0.self_attn.v_proj"] == 8 / 2
    assert pattern["target_modules"]["modules"] == ["down_proj", "q_proj", "v_proj"]
    # q: 4x32 + 32x4, v: 2x32 + 16x2, down: 4x64 + 32x4, per layer, 2 layers
    assert pattern["trainable_parameters"] == 2 * (256 + 96 + 384)
    assert bert["task_type"] == "SEQ_CLS"
    assert bert["modules_to_save"] == ["classifier"]
    assert bert["dtype"] == "float32"
    assert bert["file_size_bytes"] > 0


def test_inspect_table_and_rslora(run_cli, adapter_dir):
    code, out, _ = run_cli("inspect", adapter_dir / "llama_vo")
    assert code == 0
    assert "lora_alpha / sqrt(r) (rsLoRA)" in out
    assert "o_proj, v_proj" in out


def test_inspect_missing_folder(run_cli, tmp_path):
    code, _, err = run_cli("inspect", tmp_path / "missing")
    assert code == 1
    assert "does not exist" in err
