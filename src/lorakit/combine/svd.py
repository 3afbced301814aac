"""``svd``: the weighted sum of the deltas, truncated to a rank by an SVD of the factors.

The truncation keeps the ``k`` largest singular values, the best rank-``k``
approximation in the Frobenius norm (Eckart and Young 1936,
https://doi.org/10.1007/BF02288367). The SVD comes from a QR of the stacked factors
(:mod:`lorakit.combine.factored`), never from the dense delta.
"""

from __future__ import annotations

from lorakit.combine.factored import low_rank_sum
from lorakit.combine.types import CombineMethod, CombineOptions, ModuleResult, Term


def combine_svd(terms: list[Term], options: CombineOptions, path: str) -> ModuleResult:
    """Return ``sum_i w_i B_i A_i`` truncated to ``options.rank`` (default: the largest input rank)."""
    rank = options.rank or max(term.r for term in terms)
    return low_rank_sum(terms, rank)


METHOD = CombineMethod(
    name="svd",
    summary="weighted sum of the deltas truncated to --rank (default: the largest input rank) by SVD",
    reference="https://doi.org/10.1007/BF02288367",
    combine_module=combine_svd,
    options=frozenset({"rank"}),
)
