"""Element-wise pruning and sign election on dense deltas, shared by TIES, DARE and magnitude pruning.

Each function takes deltas stacked on dimension 0, ``(n, ...)``, one per adapter.
The definitions follow PEFT's ``peft.utils.merge_utils`` (0.21) except that the sign
is elected on the weighted deltas ``w_i * delta_i``, so a negative weight votes
against its adapter's signs (as in mergekit's TIES).
"""

from __future__ import annotations

import torch

from lorakit.errors import CombineError

MAJORITY_SIGN_METHODS = ("total", "frequency")


def magnitude_prune(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` entries of largest magnitude and zero the rest.

    Ties at the threshold are broken by ``torch.topk``'s order.
    """
    if density >= 1.0:
        return tensor
    keep = int(density * tensor.numel())
    flat = tensor.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat.abs(), k=keep, largest=True, sorted=False).indices] = True
    return (flat * mask).reshape(tensor.shape)


def random_prune(tensor: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability ``density`` and divide the kept ones by ``density`` (DARE).

    The division keeps the expected value of every entry unchanged.
    """
    if density >= 1.0:
        return tensor
    keep = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) < density
    return tensor * keep / density


def elect_sign(weighted: torch.Tensor, method: str) -> torch.Tensor:
    """Return the elected sign (+1 or -1) of every entry of ``weighted`` ``(n, ...)``.

    ``"total"`` takes the sign of ``sum_i weighted_i`` (the TIES paper's rule);
    ``"frequency"`` takes the sign that most non-zero entries have. Ties go to +1.

    Returns:
        ``(...)``, the shape of one delta.
    """
    if method == "total":
        vote = weighted.sum(dim=0)
    elif method == "frequency":
        vote = weighted.sign().sum(dim=0)
    else:
        raise CombineError(
            f"Invalid majority sign method {method!r}; expected one of: {', '.join(MAJORITY_SIGN_METHODS)}."
        )
    return torch.where(vote >= 0, 1.0, -1.0)


def disjoint_merge(weighted: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Average, per entry, the weighted deltas whose sign equals the elected one.

    ``result = sum_{i: sign(x_i) = s} x_i / max(#{i: sign(x_i) = s}, 1)``; zero
    entries never count.

    Args:
        weighted: ``(n, ...)``, the weighted (and pruned) deltas.
        sign: ``(...)``, the elected sign.
    """
    agrees = weighted.sign() == sign  # (n, ...); False where an entry is zero
    total = (weighted * agrees).sum(dim=0)
    count = agrees.sum(dim=0).clamp(min=1)
    return total / count
