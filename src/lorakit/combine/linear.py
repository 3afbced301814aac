"""``linear``: the exact weighted sum of the deltas, ``sum_i w_i * scaling_i * B_i @ A_i``.

This is task arithmetic (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089)
done on the true deltas. PEFT's ``linear`` combines ``A`` and ``B`` separately,
``(sum_i w_i B_i)(sum_i w_i A_i)``, which adds the cross terms ``w_i w_j B_i A_j``.

Without a rank the factors are concatenated (rank ``sum_i r_i``) and the result is
exact. With a rank it is truncated by an SVD computed from the factors
(:mod:`lorakit.combine.factored`), and the error is reported.
"""

from __future__ import annotations

from lorakit.combine.factored import exact_sum, low_rank_sum
from lorakit.combine.types import CombineMethod, CombineOptions, ModuleResult, Term


def combine_linear(terms: list[Term], options: CombineOptions, path: str) -> ModuleResult:
    """Return ``sum_i w_i B_i A_i``, exactly or truncated to ``options.rank``."""
    if options.rank is None:
        return exact_sum(terms)
    return low_rank_sum(terms, options.rank)


METHOD = CombineMethod(
    name="linear",
    summary="exact weighted sum of the deltas (concatenated factors); --rank truncates it by SVD",
    reference="https://arxiv.org/abs/2212.04089",
    combine_module=combine_linear,
    options=frozenset({"rank"}),
)
