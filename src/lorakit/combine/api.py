"""Combining adapters into a new adapter, one target module at a time.

For module paths ``m`` and adapters ``i`` with weights ``w_i``, the chosen method
turns the terms ``w_i * scaling_i * B_i @ A_i`` of the adapters that target ``m``
(adapters without ``m`` and zero weights add nothing) into new factors ``B @ A``
stored with scaling 1. Full module copies follow :mod:`lorakit.adapters.copies`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lorakit.adapters.copies import combine_module_copies
from lorakit.adapters.model import Adapter, LoraModule, is_embedding_base_copy
from lorakit.combine.checks import check_adapters, check_request
from lorakit.combine.registry import get_method
from lorakit.combine.types import CombineMethod, CombineOptions, ModuleResult, Term
from lorakit.errors import CombineError

logger = logging.getLogger(__name__)

# Config fields that limit which modules a target name reaches. When an input uses
# one, the output lists its modules by full path, so PEFT injects exactly those.
_LAYER_SELECTORS = ("layers_to_transform", "layers_pattern", "exclude_modules")


@dataclass
class ModuleReport:
    """The outcome of a combination on one module.

    Attributes:
        input_ranks: The rank of each input adapter on this module (``None`` where it has none).
        rank: The stored rank of the result.
        effective_rank: The rank of the result's delta (0 when it is exactly zero).
        relative_error: ``||target - result||_F / ||target||_F`` against the method's untruncated result.
    """

    input_ranks: list[int | None]
    rank: int
    effective_rank: int
    relative_error: float


@dataclass
class CombineReport:
    """The settings and per-module outcome of one combination."""

    method: str
    weights: list[float]
    rank: int | None
    density: float | None
    seed: int | None
    majority_sign: str | None
    dtype: str
    modules: dict[str, ModuleReport] = field(default_factory=dict)
    module_copies: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def max_relative_error(self) -> float:
        return max((m.relative_error for m in self.modules.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["max_relative_error"] = self.max_relative_error
        return data


def combine_adapters(
    adapters: Sequence[Adapter],
    weights: Sequence[float],
    method: str = "linear",
    *,
    rank: int | None = None,
    density: float | None = None,
    seed: int | None = None,
    majority_sign: str | None = None,
    base_model: nn.Module | None = None,
    dtype: torch.dtype | None = None,
    name: str = "combined",
    allow_different_bases: bool = False,
) -> tuple[Adapter, CombineReport]:
    """Combine ``adapters`` with ``weights`` into a new adapter.

    The maths runs in float32; the factors are stored in ``dtype`` (default: the
    inputs' dtype when they agree, else float32) with scaling 1.

    Args:
        adapters: The adapters, all for one base model.
        weights: One weight per adapter; negative and zero weights are allowed.
        method: A name from :data:`lorakit.combine.registry.METHODS`.
        rank: The rank to truncate to (``linear``: none means exact concatenation;
            the other methods default to the largest input rank of each module).
        density: The fraction of delta entries kept by ``ties``, ``dare_*`` and ``magnitude_prune``.
        seed: The seed of DARE's random pruning (a random one, recorded, if omitted).
        majority_sign: TIES' sign election, ``"total"`` (default) or ``"frequency"``.
        base_model: The base model, needed only for module copies whose weights do
            not sum to 1; when given, every adapter is also checked against it.
        dtype: The dtype to store the result in.
        name: The new adapter's name.
        allow_different_bases: Accept adapters whose configs name different base models.

    Returns:
        The new adapter and a report with each module's rank and relative error.

    Raises:
        CombineError: Invalid weights or options, adapters that do not fit together,
            non-finite inputs, a result that overflows ``dtype``, or module copies that
            need ``base_model``.
        AdapterMismatchError: An adapter does not fit ``base_model``.
    """
    combine_method = get_method(method)
    options = check_request(
        combine_method, adapters, weights, rank=rank, density=density, seed=seed, majority_sign=majority_sign
    )
    check_adapters(adapters, options.rank, base_model=base_model, allow_different_bases=allow_different_bases)
    weights = [float(w) for w in weights]
    out_dtype = dtype or _common_dtype(adapters)
    started = time.perf_counter()
    modules, module_reports = _combine_modules(combine_method, adapters, weights, options, out_dtype)
    copies, copy_reports = _combine_copies(adapters, weights, base_model)
    combined = Adapter(name=name, config=output_config(adapters, modules), modules=modules, module_copies=copies)
    report = CombineReport(
        method=combine_method.name,
        weights=weights,
        rank=options.rank,
        density=options.density,
        seed=options.seed if "seed" in combine_method.options else None,
        majority_sign=options.majority_sign if "majority_sign" in combine_method.options else None,
        dtype=str(out_dtype).removeprefix("torch."),
        modules=module_reports,
        module_copies=copy_reports,
        seconds=time.perf_counter() - started,
    )
    return combined, report


def _common_dtype(adapters: Sequence[Adapter]) -> torch.dtype:
    dtypes = {adapter.dtype for adapter in adapters}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _combine_modules(
    method: CombineMethod,
    adapters: Sequence[Adapter],
    weights: list[float],
    options: CombineOptions,
    out_dtype: torch.dtype,
) -> tuple[dict[str, LoraModule], dict[str, ModuleReport]]:
    paths = list(dict.fromkeys(path for adapter in adapters for path in adapter.modules))
    modules: dict[str, LoraModule] = {}
    reports: dict[str, ModuleReport] = {}
    for path in tqdm(paths, desc=f"combine ({method.name})", unit="module", leave=False, disable=None):
        terms = module_terms(adapters, weights, path)
        if not terms:
            continue  # only adapters with weight 0 target this module
        result = method.combine_module(terms, options, path)
        modules[path] = _to_lora_module(result, _first_module(adapters, path), out_dtype, path)
        reports[path] = ModuleReport(
            input_ranks=[a.modules[path].r if path in a.modules else None for a in adapters],
            rank=result.r,
            effective_rank=result.effective_rank,
            relative_error=result.relative_error,
        )
    return modules, reports


def module_terms(adapters: Sequence[Adapter], weights: Sequence[float], path: str) -> list[Term]:
    """Return the float32 terms of the adapters that target ``path`` with a non-zero weight."""
    terms = []
    for adapter, weight in zip(adapters, weights):
        module = adapter.modules.get(path)
        if module is None or weight == 0.0:
            continue
        bias = None if module.lora_bias is None else module.lora_bias.float() * module.scaling
        terms.append(Term(weight, module.lora_A.float(), module.lora_B.float() * module.scaling, bias))
    return terms


def _first_module(adapters: Sequence[Adapter], path: str) -> LoraModule:
    return next(adapter.modules[path] for adapter in adapters if path in adapter.modules)


def _to_lora_module(result: ModuleResult, like: LoraModule, dtype: torch.dtype, path: str) -> LoraModule:
    tensors = [result.lora_A, result.lora_B] + ([result.lora_bias] if result.lora_bias is not None else [])
    stored = [t.to(dtype).contiguous() for t in tensors]
    if not all(bool(torch.isfinite(t).all()) for t in stored):
        largest = max(float(t.abs().max()) for t in tensors)
        raise CombineError(
            f"Module {path!r}: the combined factors (largest entry {largest:.3g}) do not fit in {dtype}; "
            "store the result in float32 (dtype=torch.float32, --dtype float32) or use smaller weights."
        )
    return LoraModule(
        lora_A=stored[0],
        lora_B=stored[1],
        scaling=1.0,
        kind=like.kind,
        lora_bias=stored[2] if len(stored) > 2 else None,
        fan_in_fan_out=like.fan_in_fan_out,
    )


def _combine_copies(
    adapters: Sequence[Adapter], weights: list[float], base_model: nn.Module | None
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    # PEFT's copy of an embedding under an embedding LoRA (``<path>.base_layer``) equals
    # the base model's embedding and is not written out, so it is left out here.
    paths = list(dict.fromkeys(
        path for adapter in adapters for path in adapter.module_copies if not is_embedding_base_copy(path)
    ))
    copies: dict[str, dict[str, torch.Tensor]] = {}
    reports: dict[str, str] = {}
    for path in paths:
        per_adapter = [adapter.module_copies.get(path) for adapter in adapters]
        base = _base_parameters(base_model, path) if base_model is not None else None
        combined = combine_module_copies(per_adapter, weights, base, path=path)
        if combined is None:
            reports[path] = "equals the base module, left out"
            continue
        dtype = next(next(iter(c.values())).dtype for c in per_adapter if c)
        copies[path] = {n: t.to(dtype) if t.is_floating_point() else t for n, t in combined.items()}
        reports[path] = "base + sum_i w_i * (copy_i - base)"
    return copies, reports


def _base_parameters(model: nn.Module, path: str) -> dict[str, torch.Tensor]:
    from lorakit.adapters.validate import find_module

    module = find_module(model, path)
    if module is None:
        raise CombineError(f"Module copy {path!r} has no module in the base model {type(model).__name__}.")
    return {name: tensor.detach() for name, tensor in module.state_dict().items()}


def output_config(adapters: Sequence[Adapter], modules: dict[str, LoraModule]) -> dict[str, Any]:
    """Return the PEFT config of a combined adapter, with each module's rank and scaling 1.

    ``r`` is the most common rank and ``lora_alpha`` equals it. ``rank_pattern`` and
    ``alpha_pattern`` (keys: escaped full module paths) give the other modules.
    """
    first = adapters[0].config
    base_name = next((a.base_model_name_or_path for a in adapters if a.base_model_name_or_path), None)
    ranks = Counter(module.r for module in modules.values())
    r = min(ranks, key=lambda rank: (-ranks[rank], rank)) if ranks else 1  # most common, smallest on a tie
    rank_pattern = {re.escape(path): m.r for path, m in modules.items() if m.r != r}
    return {
        "peft_type": "LORA",
        "task_type": first.get("task_type"),
        "base_model_name_or_path": base_name,
        "revision": first.get("revision"),
        "target_modules": _target_modules(adapters, list(modules)),
        "r": r,
        "lora_alpha": r,
        "rank_pattern": rank_pattern,
        "alpha_pattern": dict(rank_pattern),  # alpha = r per module, so scaling = 1
        "use_rslora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _target_modules(adapters: Sequence[Adapter], paths: list[str]) -> list[str]:
    """Return target names that reach exactly ``paths``: leaf names when safe, else full paths."""
    plain = all(
        isinstance(a.config.get("target_modules"), list) and not any(a.config.get(k) for k in _LAYER_SELECTORS)
        for a in adapters
    )
    if plain:
        return sorted({path.rsplit(".", 1)[-1] for path in paths})
    return sorted(paths)


def relative_errors_summary(report: CombineReport) -> str:
    """Return one line with the number of modules and the largest and mean relative errors."""
    errors = [m.relative_error for m in report.modules.values()]
    mean = math.fsum(errors) / len(errors) if errors else 0.0
    return f"{len(errors)} modules, relative error max {report.max_relative_error:.3g}, mean {mean:.3g}"
