"""``magnitude_prune``: trim each delta to its largest entries, then the weighted sum.

This is the trim step of TIES-Merging (https://arxiv.org/abs/2306.01708) without
its sign election: per module, each delta ``scaling_i * B_i @ A_i`` keeps the
``density`` fraction of entries of largest magnitude, and the result
``sum_i w_i * trimmed_i`` is brought back to ``--rank`` by an SVD.
"""

from __future__ import annotations

import torch

from lorakit.combine.dense import dense_method
from lorakit.combine.sparsify import magnitude_prune
from lorakit.combine.types import CombineMethod, CombineOptions


def merge_magnitude_prune(
    deltas: torch.Tensor, weights: torch.Tensor, options: CombineOptions, generator: torch.Generator
) -> torch.Tensor:
    """Return ``sum_i w_i * trim(delta_i)`` for ``deltas`` ``(n, ...)``, shaped ``(...)``."""
    density = options.density if options.density is not None else 1.0
    trimmed = torch.stack([magnitude_prune(delta, density) for delta in deltas])
    return (trimmed * weights.view(-1, *([1] * (deltas.dim() - 1)))).sum(dim=0)


METHOD = CombineMethod(
    name="magnitude_prune",
    summary="keep the --density fraction of largest-magnitude entries of each delta, then the weighted sum",
    reference="https://arxiv.org/abs/2306.01708",
    combine_module=dense_method(merge_magnitude_prune),
    options=frozenset({"rank", "density"}),
    required=frozenset({"density"}),
    dense=True,
)
