"""The rule for full module copies (PEFT's ``modules_to_save``) in a weighted stack or combination.

A copy of module ``M`` replaces ``M`` whole, so it is treated as a dense delta
against the base module. For adapters ``i`` with weights ``w_i``, every parameter
``p`` of ``M`` becomes::

    p = base_p + sum_{i in C} w_i * (copy_i_p - base_p)
      = (1 - W_C) * base_p + sum_{i in C} w_i * copy_i_p,      W_C = sum_{i in C} w_i

where ``C`` is the set of adapters that carry a copy of ``M``; the others add
nothing. The second form shows when the base is not needed: if ``W_C == 1`` the
result is ``sum_i w_i * copy_i`` (one adapter at weight 1 gives its copy exactly).
The runtime's stacks and :mod:`lorakit.combine` both use :func:`combine_module_copies`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from lorakit.errors import CombineError

# Weights that sum to 1 within this tolerance drop the base term. The error of doing
# so is at most this fraction of the base parameter, far below float32 resolution.
WEIGHT_SUM_TOLERANCE = 1e-9

ModuleState = Mapping[str, torch.Tensor]


def combine_module_copies(
    copies: Sequence[ModuleState | None],
    weights: Sequence[float],
    base: ModuleState | None = None,
    *,
    path: str = "module",
) -> dict[str, torch.Tensor] | None:
    """Combine the copies of one module that several adapters carry.

    Computes ``(1 - W_C) * base + sum_i w_i * copy_i`` per parameter (see the module
    docstring) in float32 (float64 if any input is float64). The result has the dtype
    of ``base`` when given, else that of the first copy.

    Args:
        copies: Per adapter, its copy of the module as ``parameter name -> tensor``,
            or ``None`` when that adapter carries no copy.
        weights: One weight per adapter, in the same order.
        base: The base module's parameters. Needed unless the weights of the adapters
            that carry a copy sum to 1.
        path: The module's path, for messages.

    Returns:
        The combined parameters, or ``None`` when the result is the base module itself:
        no adapter with a non-zero weight carries a copy, or (without ``base``) the
        weighted copies cancel exactly and their weights sum to 0.

    Raises:
        CombineError: The counts differ, the copies (or the base) differ in parameter
            names or shapes, or ``base`` is needed but missing.
    """
    if len(copies) != len(weights):
        raise CombineError(
            f"Module {path!r}: {len(copies)} copies but {len(weights)} weights; pass one weight per adapter."
        )
    carried = [(copy, float(w)) for copy, w in zip(copies, weights) if copy is not None and w != 0.0]
    if not carried:
        return None
    reference = _check_same_layout([copy for copy, _ in carried], base, path)
    weight_sum = math.fsum(w for _, w in carried)
    base_weight = 1.0 - weight_sum
    if abs(base_weight) <= WEIGHT_SUM_TOLERANCE:
        base_weight = 0.0
    combined = {}
    for name in reference:
        tensors = [copy[name] for copy, _ in carried]
        base_tensor = base[name] if base is not None else None
        combined[name] = _combine_parameter(name, tensors, [w for _, w in carried], base_tensor, base_weight)
    if base is None and base_weight != 0.0:
        if weight_sum == 0.0 and all(not torch.any(t) for t in combined.values() if t.is_floating_point()):
            return None  # the copies cancel exactly, so the result is the base module
        raise CombineError(
            f"Module {path!r} is a full copy (modules_to_save) in adapters whose weights sum to {weight_sum:g}, "
            f"not 1, so the result base + sum_i w_i * (copy_i - base) depends on the base model's {path!r}. "
            "Pass the base model (base_model=..., or --model on the command line), or choose weights for "
            "these adapters that sum to 1."
        )
    return combined


def _check_same_layout(copies: list[ModuleState], base: ModuleState | None, path: str) -> ModuleState:
    reference = base if base is not None else copies[0]
    expected = {name: tuple(t.shape) for name, t in reference.items()}
    for index, copy in enumerate(copies):
        found = {name: tuple(t.shape) for name, t in copy.items()}
        if found != expected:
            against = "the base module" if base is not None else "the first copy"
            raise CombineError(
                f"Module {path!r}: copy {index + 1} has parameters {_describe(found)} but {against} has "
                f"{_describe(expected)}. Copies of one module can only be combined when their shapes match; "
                "were these adapters trained on the same base model with the same label count?"
            )
    return reference


def _describe(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape in sorted(shapes.items())) or "none"


def _combine_parameter(
    name: str,
    tensors: list[torch.Tensor],
    weights: list[float],
    base: torch.Tensor | None,
    base_weight: float,
) -> torch.Tensor:
    out_dtype = base.dtype if base is not None else tensors[0].dtype
    if not out_dtype.is_floating_point:
        # Integer buffers (counters, ids) cannot be weighted; they must agree.
        if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
            raise CombineError(f"Parameter {name!r} is an integer tensor that differs between copies.")
        return tensors[0].clone()
    all_inputs = tensors + ([base] if base is not None else [])
    compute = torch.float64 if any(t.dtype == torch.float64 for t in all_inputs) else torch.float32
    total = torch.zeros_like(tensors[0], dtype=compute)
    for tensor, weight in zip(tensors, weights):
        total = total + weight * tensor.to(compute)
    if base is not None and base_weight != 0.0:
        total = total + base_weight * base.to(compute)
    return total.to(out_dtype)
