"""``dare_linear``: DARE (Yu et al. 2023, https://arxiv.org/abs/2311.03099) then a weighted sum.

Per module, each delta ``scaling_i * B_i @ A_i`` keeps every entry with probability
``density`` and divides the kept ones by ``density`` (drop and rescale). The result
``sum_i w_i * pruned_i`` is brought back to ``--rank`` (default: the largest input
rank) by an SVD. The random masks come from ``--seed``, per module.
"""

from __future__ import annotations

import torch

from lorakit.combine.dense import dense_method
from lorakit.combine.sparsify import random_prune
from lorakit.combine.types import CombineMethod, CombineOptions


def merge_dare_linear(
    deltas: torch.Tensor, weights: torch.Tensor, options: CombineOptions, generator: torch.Generator
) -> torch.Tensor:
    """Return ``sum_i w_i * dare(delta_i)`` for ``deltas`` ``(n, ...)``, shaped ``(...)``."""
    density = options.density if options.density is not None else 1.0
    pruned = torch.stack([random_prune(delta, density, generator) for delta in deltas])
    return (pruned * weights.view(-1, *([1] * (deltas.dim() - 1)))).sum(dim=0)


METHOD = CombineMethod(
    name="dare_linear",
    summary="DARE: drop delta entries at random (keep --density, rescale), then the weighted sum",
    reference="https://arxiv.org/abs/2311.03099",
    combine_module=dense_method(merge_dare_linear),
    options=frozenset({"rank", "density", "seed"}),
    required=frozenset({"density"}),
    dense=True,
)
