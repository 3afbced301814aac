"""Training on the packaged real models and data: MiniLM on Rotten Tomatoes, SmolLM2 on chitchat."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorakit.assets import resolve_model
from lorakit.runtime import MultiAdapterModel
from lorakit.train import train

from .helpers import chitchat_conversations, rotten_tomatoes_rows

pytestmark = pytest.mark.real


def _save_splits(folder, rows, held_out):
    DatasetDict({
        "train": Dataset.from_list(rows[:-held_out]),
        "validation": Dataset.from_list(rows[-held_out:]),
    }).save_to_disk(str(folder))
    return folder, rows[-held_out:]


def test_minilm_beats_untrained_on_rotten_tomatoes(tmp_path):
    data, held_out = _save_splits(tmp_path / "reviews", rotten_tomatoes_rows(400, seed=0), held_out=100)
    out = tmp_path / "reviews-adapter"
    result = train(
        model="minilm", dataset=str(data), task="seq-cls", output=str(out), r=8, lora_alpha=16,
        epochs=2, batch_size=16, learning_rate=4e-3, max_length=32, eval_steps=10_000, quiet=True,
    )
    before = result.metrics["initial_eval"]["eval_accuracy"]
    after = result.metrics["final_eval"]["eval_accuracy"]
    assert result.metrics["eval_rows"] == 100
    assert after > before + 0.1, (before, after)
    assert result.label_names == ["fresh", "rotten"]

    model_path = resolve_model("minilm")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    inputs = tokenizer([row["text"] for row in held_out], truncation=True, max_length=32, padding=True, return_tensors="pt")
    labels = torch.tensor([result.label_names.index(row["label"]) for row in held_out])
    peft_model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2), out
    ).eval()
    runtime = MultiAdapterModel(AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2).eval())
    runtime.load_adapter(out, "reviews")
    runtime.activate("reviews")
    with torch.no_grad():
        peft_logits = peft_model(**inputs).logits
        runtime_logits = runtime.model(**inputs).logits
    torch.testing.assert_close(runtime_logits, peft_logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(runtime_logits.argmax(-1), peft_logits.argmax(-1))
    accuracy = (peft_logits.argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(after, abs=1e-6)


def test_smollm2_chitchat_held_out_loss_falls(tmp_path):
    # A short system message replaces SmolLM2's default one, so more of each conversation fits.
    conversations = chitchat_conversations(36, seed=0, turns=2, system="Chat casually.")
    data, _ = _save_splits(tmp_path / "chats", conversations, held_out=12)
    out = tmp_path / "chitchat-adapter"
    result = train(
        model="smollm2", dataset=str(data), task="causal-lm", output=str(out), r=8, lora_alpha=16,
        target_modules=["q_proj", "v_proj"], assistant_only_loss=True, epochs=1, batch_size=4,
        learning_rate=1e-3, max_length=96, eval_steps=10_000, quiet=True,
    )
    before = result.metrics["initial_eval"]["eval_loss"]
    after = result.metrics["final_eval"]["eval_loss"]
    assert after < before - 0.05, (before, after)
    assert result.metrics["final_eval"]["eval_perplexity"] < result.metrics["initial_eval"]["eval_perplexity"]
    assert result.metrics["train_rows"] >= 22  # conversations whose assistant turn starts beyond 96 tokens are dropped
    assert result.metrics["train"]["global_step"] == math.ceil(result.metrics["train_rows"] / 4)
