"""Folding adapters into a model's weights in place: ``W <- W + sum_i w_i * delta_i``.

Each target weight is updated on its own, in float32 (float64 for a float64 model),
and stored back in its dtype, so the extra memory is a few copies of the largest
single weight. Module copies (``modules_to_save``) follow
:func:`lorakit.adapters.copies.combine_module_copies` with the model's module as the base.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lorakit.adapters.copies import combine_module_copies
from lorakit.adapters.model import Adapter, is_embedding_base_copy
from lorakit.adapters.validate import find_module, layer_shape, validate_adapter
from lorakit.combine.api import module_terms
from lorakit.combine.factored import combined_bias, concatenate
from lorakit.errors import MergeError

logger = logging.getLogger(__name__)


@dataclass
class FoldReport:
    """The modules whose weights a fold changed."""

    lora_modules: list[str] = field(default_factory=list)
    module_copies: list[str] = field(default_factory=list)


@dataclass
class _Update:
    path: str
    name: str
    target: torch.Tensor
    value: torch.Tensor


def fold_adapters(model: nn.Module, adapters: Sequence[Adapter], weights: Sequence[float]) -> FoldReport:
    """Add ``sum_i w_i * delta_i`` of ``adapters`` to ``model``'s weights, in place.

    Every adapter is checked against the model, and every new weight is computed and
    checked for NaN and infinity (after the cast to its dtype) before the first one
    is written, so a failure leaves the model unchanged. Each weight is computed
    twice to keep the memory at one weight at a time.

    Raises:
        AdapterMismatchError: An adapter does not fit the model.
        MergeError: A module is both a LoRA target and a module copy, or a result is not finite.
        CombineError: Module copies of different shapes, or weights count mismatch.
    """
    if len(weights) != len(adapters):
        raise MergeError(f"Got {len(weights)} weights for {len(adapters)} adapters; pass one weight per adapter.")
    for adapter in adapters:
        validate_adapter(adapter, model)
    _check_no_overlap(adapters)
    for update in _updates(model, adapters, weights):
        if not bool(torch.isfinite(update.value).all()):
            raise MergeError(
                f"Merging into {update.path}.{update.name} gives NaN or infinity in {update.target.dtype} "
                f"(largest delta entry is too large for it); the model was not changed. Check the adapters "
                "and weights, or load the model in float32."
            )
    report = FoldReport()
    with torch.no_grad():
        for update in _updates(model, adapters, weights):
            update.target.copy_(update.value)
            group = report.module_copies if _is_copy(adapters, update.path) else report.lora_modules
            if update.path not in group:
                group.append(update.path)
    logger.debug("Folded %d LoRA modules and %d module copies", len(report.lora_modules), len(report.module_copies))
    return report


def _check_no_overlap(adapters: Sequence[Adapter]) -> None:
    lora_paths = {path for adapter in adapters for path in adapter.modules}
    copy_paths = {path for adapter in adapters for path in adapter.module_copies if not is_embedding_base_copy(path)}
    both = sorted(lora_paths & copy_paths)
    if both:
        raise MergeError(
            f"Modules {', '.join(both)} carry LoRA factors in one adapter and a full copy in another; "
            "lorakit cannot merge both into one module. Merge those adapters separately."
        )


def _is_copy(adapters: Sequence[Adapter], path: str) -> bool:
    return any(path in adapter.module_copies for adapter in adapters)


def _updates(model: nn.Module, adapters: Sequence[Adapter], weights: Sequence[float]) -> Iterator[_Update]:
    """Yield the new value of every changed parameter, one at a time."""
    lora_paths = list(dict.fromkeys(path for adapter in adapters for path in adapter.modules))
    for path in lora_paths:
        terms = module_terms(adapters, weights, path)
        if terms:
            yield from _lora_updates(find_module(model, path), path, terms)
    copy_paths = list(dict.fromkeys(
        path for adapter in adapters for path in adapter.module_copies if not is_embedding_base_copy(path)
    ))
    for path in copy_paths:
        module = find_module(model, path)
        base = module.state_dict(keep_vars=True)
        combined = combine_module_copies([a.module_copies.get(path) for a in adapters], weights, base, path=path)
        for name, value in (combined or {}).items():
            yield _Update(path, name, base[name], value)


def _lora_updates(module: nn.Module, path: str, terms) -> Iterator[_Update]:
    kind = layer_shape(module)[0]
    lora_B, lora_A = concatenate(terms)  # (out, R), (R, in)
    weight = module.weight
    compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
    delta = lora_B.to(compute) @ lora_A.to(compute)  # (out, in); embedding: (dim, num_embeddings)
    if kind in ("conv1d", "embedding"):
        delta = delta.T  # Conv1D keeps (in, out); an embedding (num_embeddings, dim)
    yield _Update(path, "weight", weight, (weight.to(compute) + delta).to(weight.dtype))
    del delta
    bias = combined_bias(terms)
    if bias is not None:
        yield _Update(path, "bias", module.bias, (module.bias.to(compute) + bias.to(compute)).to(module.bias.dtype))
