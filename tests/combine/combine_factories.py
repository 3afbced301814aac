"""Tiny models built from configs, PEFT adapter folders with random factors, and PEFT-made references.

Shared by tests/combine, tests/merge and tests/compare. The reference functions use
PEFT's own ``get_delta_weight`` and never lorakit's code, so a test that compares
the two can fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 128
PEFT_PREFIX = "base_model.model."


def tiny_llama(dtype: torch.dtype = torch.float32, hidden: int = 32) -> LlamaForCausalLM:
    """A 2-layer LLaMA (4 heads, 2 KV heads, vocabulary 128) with fixed random weights."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_bert(num_labels: int = 3) -> BertForSequenceClassification:
    """A 2-layer BERT sequence classifier of hidden size 32 with fixed random weights."""
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    """A 2-layer GPT-2 (``Conv1D`` attention) of hidden size 32 with fixed random weights."""
    torch.manual_seed(2)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(config).eval()


def make_adapter(
    base_factory: Callable[[], torch.nn.Module],
    folder: Path,
    *,
    seed: int,
    scale: float = 0.2,
    dtype: torch.dtype | None = None,
    **lora_kwargs,
) -> Path:
    """Save a PEFT adapter whose factors, LoRA biases and module copies are all random and non-zero.

    ``dtype`` casts the whole PEFT model before saving (PEFT keeps LoRA weights in
    float32 on a half-precision base unless told otherwise).
    """
    model = get_peft_model(base_factory(), LoraConfig(**lora_kwargs))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                noise = torch.randn(parameter.shape, generator=generator) * scale
                parameter.copy_(noise.to(parameter.dtype))
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder)
    return folder


def input_ids(batch: int = 2, length: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def peft_logits(base_factory: Callable[[], torch.nn.Module], folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of ``folder`` loaded by PEFT onto a fresh base model."""
    model = PeftModel.from_pretrained(base_factory(), str(folder)).eval()
    return logits(model, ids)


def reference_model(
    base_factory: Callable[[], torch.nn.Module], folders: Sequence[Path], weights: Sequence[float]
) -> torch.nn.Module:
    """Return a base model with ``sum_i w_i * delta_i`` added to its weights, each delta from PEFT.

    Module copies follow ``base + sum_i w_i * (copy_i - base)``.
    """
    peft_model = PeftModel.from_pretrained(base_factory(), str(folders[0]), adapter_name="a0")
    for index, folder in enumerate(folders[1:], start=1):
        peft_model.load_adapter(str(folder), adapter_name=f"a{index}")
    names = [f"a{index}" for index in range(len(folders))]
    reference = base_factory()
    with torch.no_grad():
        for path, module in peft_model.named_modules():
            target_path = path.removeprefix(PEFT_PREFIX)
            if isinstance(module, LoraLayer):
                _add_lora_deltas(reference.get_submodule(target_path), module, names, weights)
            elif isinstance(module, ModulesToSaveWrapper):
                _apply_copies(reference.get_submodule(target_path), module, names, weights)
    return reference.eval()


def _add_lora_deltas(target: torch.nn.Module, layer: LoraLayer, names: list[str], weights: Sequence[float]) -> None:
    delta = torch.zeros_like(target.weight, dtype=torch.float32)
    bias_delta = None
    for name, weight in zip(names, weights):
        if name not in layer.lora_A and name not in layer.lora_embedding_A:
            continue
        delta += weight * layer.get_delta_weight(name).float()
        lora_B = layer.lora_B[name] if name in layer.lora_B else None
        if lora_B is not None and getattr(lora_B, "bias", None) is not None:
            term = weight * lora_B.bias.float() * layer.scaling[name]
            bias_delta = term if bias_delta is None else bias_delta + term
    target.weight.copy_((target.weight.float() + delta).to(target.weight.dtype))
    if bias_delta is not None:
        target.bias.copy_((target.bias.float() + bias_delta).to(target.bias.dtype))


def _apply_copies(target: torch.nn.Module, wrapper: ModulesToSaveWrapper, names: list[str], weights) -> None:
    for parameter_name, base in target.named_parameters():
        total = base.float().clone()
        for name, weight in zip(names, weights):
            if name in wrapper.modules_to_save:
                copy = wrapper.modules_to_save[name].get_parameter(parameter_name).float()
                total += weight * (copy - base.float())
        base.copy_(total.to(base.dtype))
