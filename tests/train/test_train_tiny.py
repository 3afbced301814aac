"""End-to-end training on tiny models: output files, labels, loading back, the command line and refusals."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lorakit.cli.app import main
from lorakit.errors import OutputExistsError, TrainingConfigError
from lorakit.runtime import MultiAdapterModel
from lorakit.train import train

FAST = dict(r=4, lora_alpha=8, batch_size=8, max_steps=4, learning_rate=5e-3, quiet=True)


def test_seq_cls_writes_adapter_and_report(tiny_bert_dir, reviews_csv, tmp_path):
    out = tmp_path / "reviews"
    result = train(model=str(tiny_bert_dir), dataset=str(reviews_csv), task="seq-cls", output=str(out), validation_size=16, **FAST)
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "loss.png", "README.md", "training_config.yaml"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert "id2label" not in config  # PEFT would warn about a key its LoraConfig does not have
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}
    assert config["target_modules"] == ["key", "query", "value"] or sorted(config["target_modules"]) == ["key", "query", "value"]
    assert config["modules_to_save"] == ["classifier"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_rows"] == 48
    assert metrics["eval_rows"] == 16
    assert metrics["train"]["global_step"] == 4
    assert set(metrics["final_eval"]) >= {"eval_loss", "eval_accuracy", "eval_f1_macro"}
    assert metrics["initial_eval"]["step"] == 0
    assert any("loss" in entry for entry in metrics["history"])
    assert result.label_names == ["neg", "pos"]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert "0 = neg, 1 = pos" in card
    assert "| accuracy |" in card


def test_seq_cls_adapter_loads_in_peft_and_runtime(tiny_bert_dir, reviews_csv, tmp_path):
    out = tmp_path / "reviews"
    train(model=str(tiny_bert_dir), dataset=str(reviews_csv), task="seq-cls", output=str(out), validation_size=0, **FAST)
    state = load_file(str(out / "adapter_model.safetensors"))
    assert all(key.startswith("base_model.model.") for key in state)
    assert any(".lora_B." in key and state[key].abs().sum() > 0 for key in state)
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 30, 3], [2, 12, 40, 3, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])}
    peft_model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2), out).eval()
    runtime = MultiAdapterModel(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval())
    runtime.load_adapter(out, "reviews")
    runtime.activate("reviews")
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        actual = runtime.model(**inputs).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_causal_lm_chat_run(tiny_llama_dir, chats_jsonl, tmp_path):
    out = tmp_path / "chat"
    result = train(model=str(tiny_llama_dir), dataset=str(chats_jsonl), task="causal-lm", output=str(out),
                   assistant_only_loss=True, validation_size=8, **FAST)
    final = result.metrics["final_eval"]
    assert final["eval_perplexity"] == pytest.approx(torch.tensor(final["eval_loss"]).exp().item(), rel=1e-6)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM"
    assert "id2label" not in config
    assert not (out / "labels.json").exists()
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out)
    assert model.peft_config["default"].r == 4


def test_existing_adapter_refused_then_overwritten(tiny_bert_dir, reviews_csv, tmp_path):
    out = tmp_path / "reviews"
    settings = dict(model=str(tiny_bert_dir), dataset=str(reviews_csv), task="seq-cls", output=str(out), validation_size=0, **FAST)
    train(**settings)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError) as raised:
        train(**settings)
    assert "already holds an adapter (adapter_config.json); pass --overwrite to replace it" in str(raised.value)
    before = load_file(str(out / "adapter_model.safetensors"))
    train(**settings, overwrite=True, seed=7)
    after = load_file(str(out / "adapter_model.safetensors"))
    assert any(not torch.equal(before[key], after[key]) for key in before)
    assert (out / "notes.txt").read_text() == "mine"


def test_unknown_target_module_fails_before_training(tiny_llama_dir, chats_jsonl, tmp_path):
    with pytest.raises(TrainingConfigError) as raised:
        train(model=str(tiny_llama_dir), dataset=str(chats_jsonl), task="causal-lm", output=str(tmp_path / "x"),
              target_modules=["q_proj", "query"], **FAST)
    message = str(raised.value)
    assert "'query' matches no module" in message
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in message
    assert not (tmp_path / "x").exists()


def test_hub_model_offline_fails_clearly(chats_jsonl, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrainingConfigError) as raised:
        train(model="lorakit-tests/no-such-model", dataset=str(chats_jsonl), task="causal-lm", output=str(tmp_path / "x"))
    message = str(raised.value)
    assert "Cannot load a tokenizer from --model 'lorakit-tests/no-such-model'" in message
    assert "or minilm / smollm2" in message


def test_command_line_with_yaml_config(tiny_bert_dir, reviews_csv, tmp_path, capsys):
    out = tmp_path / "cli"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_bert_dir), "dataset": str(reviews_csv), "task": "seq-cls", "output": str(out),
        "r": 16, "max-steps": 3, "batch-size": 8, "validation-size": 8,
    }))
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config", str(config), "--r", "2", "--quiet"])
    assert exited.value.code in (0, None)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    settings = yaml.safe_load((out / "training_config.yaml").read_text())
    assert settings["max-steps"] == 3
    assert f"Adapter written to {out}: accuracy" in capsys.readouterr().out


def test_command_line_error_exits_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--model", "m", "--dataset", str(tmp_path / "absent.csv"), "--task", "seq-cls",
              "--output", str(tmp_path / "o"), "--lora-dropout", "2"])
    assert exited.value.code == 1
    assert "--lora-dropout must be in [0, 1), got 2.0" in capsys.readouterr().err
