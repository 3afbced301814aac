"""In-memory form of a LoRA adapter, independent of PEFT's module wrappers.

An adapter maps each target module of the base model (by its path in the
transformers model, e.g. ``model.layers.0.self_attn.q_proj``) to a pair of factors.
For a linear layer with weight ``W`` of shape ``(out, in)``::

    y = W x + scaling * B (A x) [+ scaling * b]      A: (r, in), B: (out, r), b: (out,)
    delta = scaling * B @ A                          (out, in)

For an embedding with ``num_embeddings`` rows of size ``dim`` PEFT stores
``A: (r, num_embeddings)`` and ``B: (dim, r)``, and the delta is
``scaling * (B @ A).T`` of shape ``(num_embeddings, dim)``. GPT-2's ``Conv1D``
keeps its weight as ``(in, out)`` (``fan_in_fan_out``), so its delta is transposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

ModuleKind = Literal["linear", "embedding"]


@dataclass
class LoraModule:
    """The factors of one adapter on one target module.

    Attributes:
        lora_A: ``(r, in_features)``; for an embedding ``(r, num_embeddings)``.
        lora_B: ``(out_features, r)``; for an embedding ``(embedding_dim, r)``.
        scaling: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA.
        kind: ``"linear"`` (also GPT-2's ``Conv1D``) or ``"embedding"``.
        lora_bias: The bias of ``lora_B`` (PEFT's ``lora_bias=True``), ``(out_features,)``.
        fan_in_fan_out: The base weight is stored as ``(in, out)`` (GPT-2's ``Conv1D``).
    """

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    scaling: float
    kind: ModuleKind = "linear"
    lora_bias: torch.Tensor | None = None
    fan_in_fan_out: bool = False

    @property
    def r(self) -> int:
        return int(self.lora_A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.lora_A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.lora_B.shape[0])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return ``scaling * B @ A`` in the layout of the base weight, computed in ``dtype``."""
        product = self.lora_B.to(dtype) @ self.lora_A.to(dtype) * self.scaling  # (out, in)
        if self.kind == "embedding" or self.fan_in_fan_out:
            return product.T  # (num_embeddings, dim) or Conv1D's (in, out)
        return product

    def bias_delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """Return ``scaling * b`` for ``lora_bias`` adapters, else ``None``."""
        if self.lora_bias is None:
            return None
        return self.lora_bias.to(dtype) * self.scaling

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.lora_A, self.lora_B, self.lora_bias) if t is not None]


def is_embedding_base_copy(path: str) -> bool:
    """Tell whether a module copy is the full embedding that PEFT saves beside an embedding LoRA.

    PEFT stores it under ``<embedding>.base_layer``; it equals the base model's embedding
    unless the vocabulary was resized or trained, which the runtime checks on load.
    """
    return path.endswith(".base_layer")


def scaling_for(lora_alpha: float, r: int, use_rslora: bool) -> float:
    """Return PEFT's scaling: ``alpha / sqrt(r)`` with rsLoRA, else ``alpha / r``."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


@dataclass
class Adapter:
    """A LoRA adapter: factors per target module plus full copies of some modules.

    Attributes:
        name: The name it is loaded under (the folder name by default).
        config: The ``adapter_config.json`` contents (PEFT's ``LoraConfig`` fields).
        modules: Module path -> factors.
        module_copies: Module path -> state dict of a full copy of that module
            (PEFT's ``modules_to_save``, e.g. a classifier head or ``lm_head``).
        source: The folder it was read from, if any.
    """

    name: str
    config: dict[str, Any]
    modules: dict[str, LoraModule] = field(default_factory=dict)
    module_copies: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    source: Path | None = None

    @property
    def task_type(self) -> str | None:
        return self.config.get("task_type")

    @property
    def base_model_name_or_path(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def dtype(self) -> torch.dtype:
        for module in self.modules.values():
            return module.lora_A.dtype
        for copy in self.module_copies.values():
            for tensor in copy.values():
                return tensor.dtype
        return torch.float32

    def num_parameters(self) -> int:
        """Count the stored parameters (factors, LoRA biases and module copies)."""
        count = sum(t.numel() for m in self.modules.values() for t in m.tensors())
        for path, copy in self.module_copies.items():
            if not is_embedding_base_copy(path):
                count += sum(t.numel() for t in copy.values())
        return count

    def ranks(self) -> dict[str, int]:
        return {path: module.r for path, module in self.modules.items()}
