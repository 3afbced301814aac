"""Training on top of frozen adapters: only the new adapter trains, and it is exact on top of the stack."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback

from lorakit.adapters import read_adapter
from lorakit.errors import TrainingConfigError
from lorakit.runtime import MultiAdapterModel
from lorakit.train import train

from .helpers import run_training_process, save_random_adapter

TOKENS = torch.tensor([[1, 20, 21, 22, 23, 24, 2], [1, 30, 31, 32, 2, 0, 0]])
MASK = (TOKENS != 0).long()


class KeepModel(TrainerCallback):
    """Keep the model the Trainer trained, and which parameters required gradients."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


@pytest.fixture(scope="module")
def frozen_pair(tiny_llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("frozen")
    first = save_random_adapter(tiny_llama_dir, root / "first", seed=1, target_modules=["q_proj", "v_proj"])
    second = save_random_adapter(tiny_llama_dir, root / "second", seed=2, target_modules=["v_proj", "o_proj"], r=8)
    return first, second


def _stack_settings(tiny_llama_dir, chats_jsonl, frozen_pair, output, **changes):
    first, second = frozen_pair
    settings = dict(
        model=str(tiny_llama_dir), dataset=str(chats_jsonl), task="causal-lm", output=str(output),
        stack=[f"first={first}:0.5", f"second={second}:-1"], r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
        lora_dropout=0.1, max_steps=3, batch_size=8, learning_rate=1e-2, validation_size=0, quiet=True,
    )
    settings.update(changes)
    return settings


def test_only_new_adapter_trains(tiny_llama_dir, chats_jsonl, frozen_pair, tmp_path):
    keep = KeepModel()
    out = tmp_path / "new"
    result = train(callbacks=[keep], **_stack_settings(tiny_llama_dir, chats_jsonl, frozen_pair, out))
    # q_proj is 32 -> 32 and v_proj 32 -> 16 (2 key-value heads of 8): r * (in + out) per module, 2 layers.
    expected = 2 * (4 * (32 + 32) + 4 * (32 + 16))
    assert result.metrics["trainable_parameters"] == expected
    assert all(".new" in name for name in keep.trainable)
    assert sum(keep.model.get_parameter(name).numel() for name in keep.trainable) == expected

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    trained_state = {name.replace(".base_layer", ""): p for name, p in keep.model.named_parameters() if "lora_" not in name}
    for name, parameter in base.named_parameters():
        assert torch.equal(trained_state[name], parameter), name
    for name, path in zip(("first", "second"), frozen_pair):
        saved = read_adapter(path)
        for module_path, module in saved.modules.items():
            layer = keep.model.get_submodule(module_path)
            assert torch.equal(layer.lora_A[name], module.lora_A)
            assert torch.equal(layer.lora_B[name], module.lora_B)


def test_new_adapter_exact_on_top_of_stack(tiny_llama_dir, chats_jsonl, frozen_pair, tmp_path):
    keep = KeepModel()
    out = tmp_path / "new"
    train(callbacks=[keep], **_stack_settings(tiny_llama_dir, chats_jsonl, frozen_pair, out))
    keep.model.eval()
    with torch.no_grad():
        training_time = keep.model(input_ids=TOKENS, attention_mask=MASK).logits

    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval())
    runtime.load_adapter(frozen_pair[0], "first")
    runtime.load_adapter(frozen_pair[1], "second")
    runtime.load_adapter(out, "new")
    runtime.activate({"first": 0.5, "second": -1.0, "new": 1.0})
    with torch.no_grad():
        reloaded = runtime.model(input_ids=TOKENS, attention_mask=MASK).logits
    # Same tensors, same operations in the same order: equal bit for bit.
    assert torch.equal(reloaded, training_time)

    runtime.activate({"first": 0.5, "second": -1.0})
    with torch.no_grad():
        stack_only = runtime.model(input_ids=TOKENS, attention_mask=MASK).logits
    assert not torch.allclose(stack_only, training_time), "the new adapter must change the output"


def test_saved_adapter_has_flat_peft_keys(tiny_llama_dir, chats_jsonl, frozen_pair, tmp_path):
    out = tmp_path / "new"
    train(**_stack_settings(tiny_llama_dir, chats_jsonl, frozen_pair, out))
    state = load_file(str(out / "adapter_model.safetensors"))
    assert sorted(state) == sorted(
        f"base_model.model.model.layers.{layer}.self_attn.{module}.lora_{factor}.weight"
        for layer in (0, 1) for module in ("q_proj", "v_proj") for factor in ("A", "B")
    )
    assert all(tensor.abs().sum() > 0 for tensor in state.values())

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).eval()
    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval())
    runtime.load_adapter(out, "new")
    runtime.activate("new")
    with torch.no_grad():
        torch.testing.assert_close(
            runtime.model(input_ids=TOKENS, attention_mask=MASK).logits,
            peft_model(input_ids=TOKENS, attention_mask=MASK).logits,
            rtol=1e-5, atol=1e-6,
        )
    card = (out / "README.md").read_text()
    assert "only when loaded with them at the same weights" in card
    assert f"`second` = `{frozen_pair[1]}`, weight -1" in card
    assert "runtime.activate({'first': 0.5, 'second': -1.0, 'new': 1.0})" in card


def test_frozen_stack_has_no_trainable_parameters(tiny_llama_dir, frozen_pair):
    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    runtime.load_adapter(frozen_pair[0], "first")
    runtime.load_adapter(frozen_pair[1], "second")
    runtime.activate({"first": 1.0, "second": 1.0})
    assert sum(p.numel() for name, p in runtime.model.named_parameters() if "lora_" in name) > 0
    assert runtime.trainable_parameters() == []
    assert sum(p.numel() for p in runtime.model.parameters() if p.requires_grad) == 0


def test_two_trainable_adapters_both_get_gradients(tiny_llama_dir):
    from peft import LoraConfig

    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    runtime.add_adapter("one", config, trainable=True)
    runtime.add_adapter("two", config, trainable=True)
    assert {name.rsplit(".", 1)[-1] for name, p in runtime.model.named_parameters() if p.requires_grad} == {"one", "two"}
    for name in ("one", "two"):
        runtime.model.zero_grad()
        runtime.activate(name)
        runtime.model(input_ids=TOKENS, attention_mask=MASK, labels=TOKENS).loss.backward()
        for other in ("one", "two"):
            grads = [p.grad for n, p in runtime.model.named_parameters() if n.endswith("." + other)]
            if other == name:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), name
            else:
                assert all(g is None or g.abs().sum() == 0 for g in grads), (name, other)


def test_stack_with_classifier_head_refused(tiny_bert_dir, reviews_csv, tmp_path):
    headed = save_random_adapter(tiny_bert_dir, tmp_path / "headed", seed=3, num_labels=2, task_type="SEQ_CLS",
                                 target_modules=["query", "value"])
    with pytest.raises(TrainingConfigError) as raised:
        train(model=str(tiny_bert_dir), dataset=str(reviews_csv), task="seq-cls", output=str(tmp_path / "out"),
              stack=[f"headed={headed}"], max_steps=1, quiet=True)
    assert "Stacked adapter 'headed' carries its own classifier head (classifier)" in str(raised.value)


def test_seq_cls_on_headless_stack_trains_own_head(tiny_bert_dir, reviews_csv, tmp_path):
    headless = save_random_adapter(tiny_bert_dir, tmp_path / "headless", seed=4, num_labels=2,
                                   target_modules=["query", "value"])
    keep = KeepModel()
    out = tmp_path / "out"
    train(model=str(tiny_bert_dir), dataset=str(reviews_csv), task="seq-cls", output=str(out),
          stack=[f"headless={headless}:0.7"], max_steps=3, r=2, validation_size=0, quiet=True, callbacks=[keep])
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    keep.model.eval()
    with torch.no_grad():
        expected = keep.model(**inputs).logits
    # A base with a different random head: the adapter's own head copy replaces it.
    torch.manual_seed(123)
    runtime = MultiAdapterModel(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval())
    runtime.load_adapter(headless, "headless")
    runtime.load_adapter(out, "out")
    runtime.activate({"headless": 0.7, "out": 1.0})
    with torch.no_grad():
        assert torch.equal(runtime.model(**inputs).logits, expected)


def test_resume_stack_run_in_new_process(tiny_llama_dir, chats_jsonl, frozen_pair, tmp_path):
    uninterrupted = tmp_path / "whole"
    settings = _stack_settings(tiny_llama_dir, chats_jsonl, frozen_pair, uninterrupted, save_steps=1)
    train(**settings)

    interrupted = tmp_path / "parts"
    settings["output"] = str(interrupted)
    first = run_training_process(settings, stop_after_checkpoint=1)
    assert first.returncode != 0
    assert "stopped after checkpoint 1" in first.stderr
    checkpoint = interrupted / "checkpoints" / "checkpoint-1"
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    assert not (interrupted / "adapter_config.json").exists()

    second = run_training_process({**settings, "resume": True})
    assert second.returncode == 0, second.stderr[-3000:]
    whole = load_file(str(uninterrupted / "adapter_model.safetensors"))
    resumed = load_file(str(interrupted / "adapter_model.safetensors"))
    assert sorted(whole) == sorted(resumed)
    for key in whole:
        # Equal up to float32 rounding. Across processes the CPU kernels may order a reduction
        # differently (seen here as a one-ulp difference in some runs); a resume that lost the
        # optimizer moments or the dropout RNG state differs by orders of magnitude more.
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-6, atol=1e-7)
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["train"]["global_step"] == 3
