"""``ties``: TIES-Merging (Yadav et al. 2023, https://arxiv.org/abs/2306.01708) on the true deltas.

Per module, with ``delta_i = scaling_i * B_i @ A_i``:

1. trim: keep the ``density`` fraction of entries of largest magnitude of each delta;
2. elect: per entry, the sign of ``sum_i w_i * trimmed_i`` (``total``) or the sign
   most weighted entries have (``frequency``);
3. disjoint merge: per entry, the mean of the weighted entries ``w_i * trimmed_i``
   whose sign is the elected one.

The result is brought back to ``--rank`` (default: the largest input rank) by an SVD.
"""

from __future__ import annotations

import torch

from lorakit.combine.dense import dense_method
from lorakit.combine.sparsify import disjoint_merge, elect_sign, magnitude_prune
from lorakit.combine.types import CombineMethod, CombineOptions


def merge_ties(deltas: torch.Tensor, weights: torch.Tensor, options: CombineOptions, generator: torch.Generator) -> torch.Tensor:
    """Return the TIES merge of ``deltas`` ``(n, ...)`` with ``weights`` ``(n,)``, shaped ``(...)``."""
    density = options.density if options.density is not None else 1.0
    trimmed = torch.stack([magnitude_prune(delta, density) for delta in deltas])
    weighted = trimmed * weights.view(-1, *([1] * (deltas.dim() - 1)))  # (n, ...)
    return disjoint_merge(weighted, elect_sign(weighted, options.majority_sign))


METHOD = CombineMethod(
    name="ties",
    summary="TIES: trim each delta to --density by magnitude, elect signs, average the agreeing entries",
    reference="https://arxiv.org/abs/2306.01708",
    combine_module=dense_method(merge_ties),
    options=frozenset({"rank", "density", "majority_sign"}),
    required=frozenset({"density"}),
    dense=True,
)
