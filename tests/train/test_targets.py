"""Default target modules per model family, all-linear, and unknown names."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from lorakit.errors import TrainingConfigError
from lorakit.train.targets import resolve_target_modules

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=128)


def _llama():
    return LlamaForCausalLM(LlamaConfig(**SMALL, num_key_value_heads=2))


def _bert():
    return BertForSequenceClassification(BertConfig(**SMALL))


def _roberta():
    return RobertaForSequenceClassification(RobertaConfig(**SMALL, max_position_embeddings=64))


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64))


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_llama, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        (_bert, ["query", "key", "value"]),
        (_gpt2, ["c_attn", "attn.c_proj"]),
    ],
)
def test_default_targets_are_attention_projections(build, expected):
    assert resolve_target_modules(build(), None) == expected


def test_all_linear_leaves_out_lm_head():
    targets = resolve_target_modules(_llama(), ["all-linear"])
    assert targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_all_linear_leaves_out_classifier():
    targets = resolve_target_modules(_bert(), ["all-linear"], head_name="classifier")
    assert targets == ["query", "key", "value", "dense"]


def test_all_linear_spells_out_names_shared_with_head():
    model = _roberta()
    targets = resolve_target_modules(model, ["all-linear"], head_name="classifier")
    assert "dense" not in targets
    assert "roberta.encoder.layer.0.attention.output.dense" in targets
    assert not any(target.startswith("classifier") for target in targets)
    dense_paths = [name for name, module in model.named_modules()
                   if name.endswith(".dense") and not name.startswith("classifier") and isinstance(module, torch.nn.Linear)]
    assert set(dense_paths) <= set(targets)


def test_unknown_target_lists_module_names():
    with pytest.raises(TrainingConfigError) as raised:
        resolve_target_modules(_llama(), ["q_proj", "qkv"])
    message = str(raised.value)
    assert "Invalid --target-modules for this LlamaForCausalLM: 'qkv' matches no module" in message
    assert "Module names that can be targeted: embed_tokens, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head" in message


def test_target_on_container_module():
    with pytest.raises(TrainingConfigError, match="'self_attn' matches only LlamaAttention modules, which LoRA cannot wrap"):
        resolve_target_modules(_llama(), ["self_attn"])


def test_suffix_targets_accepted():
    assert resolve_target_modules(_llama(), ["self_attn.q_proj", "mlp.down_proj"]) == ["self_attn.q_proj", "mlp.down_proj"]
