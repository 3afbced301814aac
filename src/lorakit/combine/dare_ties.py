"""``dare_ties``: DARE's random drop and rescale (https://arxiv.org/abs/2311.03099), then TIES' sign election.

Per module, each delta keeps every entry with probability ``density`` and the kept
entries are divided by ``density``. Then, as in TIES (https://arxiv.org/abs/2306.01708),
a sign is elected per entry from the weighted deltas and the agreeing weighted
entries are averaged. The result is brought back to ``--rank`` by an SVD. The masks
come from ``--seed``.
"""

from __future__ import annotations

import torch

from lorakit.combine.dense import dense_method
from lorakit.combine.sparsify import disjoint_merge, elect_sign, random_prune
from lorakit.combine.types import CombineMethod, CombineOptions


def merge_dare_ties(
    deltas: torch.Tensor, weights: torch.Tensor, options: CombineOptions, generator: torch.Generator
) -> torch.Tensor:
    """Return the DARE-TIES merge of ``deltas`` ``(n, ...)`` with ``weights`` ``(n,)``, shaped ``(...)``."""
    density = options.density if options.density is not None else 1.0
    pruned = torch.stack([random_prune(delta, density, generator) for delta in deltas])
    weighted = pruned * weights.view(-1, *([1] * (deltas.dim() - 1)))  # (n, ...)
    return disjoint_merge(weighted, elect_sign(weighted, options.majority_sign))


METHOD = CombineMethod(
    name="dare_ties",
    summary="DARE's random drop and rescale (--density, --seed), then TIES' sign election and mean",
    reference="https://arxiv.org/abs/2311.03099",
    combine_module=dense_method(merge_dare_ties),
    options=frozenset({"rank", "density", "seed", "majority_sign"}),
    required=frozenset({"density"}),
    dense=True,
)
