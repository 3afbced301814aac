"""Tiny models built from configs, and PEFT adapter folders with non-zero factors."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 128
TINY_LLAMA_CONFIG = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}


def tiny_llama(seed: int = 0, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA_CONFIG)).to(dtype).eval()


def tiny_bert(seed: int = 0, num_labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=VOCAB, num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()


MODEL_BUILDERS = {"llama": tiny_llama, "bert": tiny_bert, "gpt2": tiny_gpt2}


def make_peft_adapter(
    model_kind: str,
    path: Path,
    seed: int,
    *,
    base_seed: int = 0,
    scale: float = 0.5,
    **lora_kwargs,
) -> Path:
    """Save a PEFT adapter for the tiny ``model_kind`` model with random non-zero A, B and copies."""
    base = MODEL_BUILDERS[model_kind](base_seed)
    lora_kwargs.setdefault("r", 4)
    lora_kwargs.setdefault("lora_alpha", 8)
    if model_kind == "gpt2":
        lora_kwargs.setdefault("target_modules", ["c_attn", "c_proj"])
        lora_kwargs.setdefault("fan_in_fan_out", True)
    elif model_kind == "bert":
        lora_kwargs.setdefault("task_type", "SEQ_CLS")
        lora_kwargs.setdefault("target_modules", ["query", "value"])
    else:
        lora_kwargs.setdefault("target_modules", ["q_proj", "v_proj"])
    peft_model = get_peft_model(base, LoraConfig(**lora_kwargs))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    peft_model.save_pretrained(path)
    return path


def token_batch(batch: int = 4, length: int = 7, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)
