"""Low-rank algebra on LoRA factors, without forming the dense ``out x in`` delta.

A weighted sum of deltas is itself a product of concatenated factors::

    sum_i w_i B_i A_i = [w_1 B_1, ..., w_n B_n] @ [A_1; ...; A_n] = B_cat @ A_cat

with ``B_cat: (out, R)``, ``A_cat: (R, in)`` and ``R = sum_i r_i``. Its SVD follows
from two thin QR decompositions and the SVD of an ``R x R`` matrix::

    B_cat = Q_B R_B,   A_cat^T = Q_A R_A,   R_B R_A^T = U_c S V_c^T
    B_cat @ A_cat = (Q_B U_c) S (Q_A V_c)^T

which costs ``O((out + in) R^2 + R^3)`` instead of ``O(out * in * min(out, in))``.
By Eckart and Young (1936), keeping the ``k`` largest singular values gives the
best rank-``k`` approximation in the Frobenius norm, with relative error
``sqrt(sum_{j > k} S_j^2) / sqrt(sum_j S_j^2)``.
"""

from __future__ import annotations

import math

import torch

from lorakit.combine.types import ModuleResult, Term

FLOAT32_EPS = torch.finfo(torch.float32).eps


def concatenate(terms: list[Term]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B_cat, A_cat)`` with ``B_cat @ A_cat == sum_i w_i B_i A_i``.

    Terms whose ``lora_A`` tensors are equal share one block, ``(sum_i w_i B_i) @ A``,
    so the same adapter twice keeps its own rank. Blocks whose ``B`` sums to exactly
    zero (the same adapter at weights ``[1, -1]``) are left out.

    Returns:
        ``B_cat: (out, R)`` and ``A_cat: (R, in)``; ``R`` is 0 when every block cancels.
    """
    blocks: list[tuple[torch.Tensor, torch.Tensor]] = []
    for term in terms:
        weighted_B = term.weight * term.lora_B  # (out, r)
        for index, (shared_A, summed_B) in enumerate(blocks):
            if shared_A.shape == term.lora_A.shape and torch.equal(shared_A, term.lora_A):
                blocks[index] = (shared_A, summed_B + weighted_B)
                break
        else:
            blocks.append((term.lora_A, weighted_B))
    blocks = [(shared_A, summed_B) for shared_A, summed_B in blocks if torch.any(summed_B)]
    out_features, in_features = terms[0].lora_B.shape[0], terms[0].lora_A.shape[1]
    if not blocks:
        return terms[0].lora_B.new_zeros(out_features, 0), terms[0].lora_A.new_zeros(0, in_features)
    B_cat = torch.cat([summed_B for _, summed_B in blocks], dim=1)  # (out, R)
    A_cat = torch.cat([shared_A for shared_A, _ in blocks], dim=0)  # (R, in)
    return B_cat, A_cat


def combined_bias(terms: list[Term]) -> torch.Tensor | None:
    """Return ``sum_i w_i b_i`` over the terms that have a ``lora_bias``, or ``None`` if none has."""
    biases = [term.weight * term.lora_bias for term in terms if term.lora_bias is not None]
    if not biases:
        return None
    return torch.stack(biases).sum(dim=0)


def factored_svd(lora_B: torch.Tensor, lora_A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the thin SVD ``U, S, Vh`` of ``lora_B @ lora_A`` computed from the factors.

    Args:
        lora_B: ``(out, R)``.
        lora_A: ``(R, in)``.

    Returns:
        ``U: (out, K)``, ``S: (K,)`` in descending order and ``Vh: (K, in)``, with
        ``K = min(out, in, R)``.
    """
    Q_B, R_B = torch.linalg.qr(lora_B)  # (out, K_B), (K_B, R)
    Q_A, R_A = torch.linalg.qr(lora_A.T)  # (in, K_A), (K_A, R)
    core = R_B @ R_A.T  # (K_B, K_A), small
    U_core, S, Vh_core = torch.linalg.svd(core, full_matrices=False)  # K = min(K_B, K_A)
    return Q_B @ U_core, S, Vh_core @ Q_A.T  # (out, K), (K,), (K, in)


def rank_tolerance(terms: list[Term], out_features: int, in_features: int) -> float:
    """Return the singular value below which a combined delta is float32 rounding noise.

    It is ``eps * max(out, in) * sum_i |w_i| ||B_i||_F ||A_i||_F``: the usual
    numerical-rank threshold, scaled by a bound on the inputs' size rather than by the
    result's, so that adapters that cancel give rank 0 instead of amplified noise.
    """
    scale = sum(abs(t.weight) * float(torch.linalg.norm(t.lora_B)) * float(torch.linalg.norm(t.lora_A)) for t in terms)
    return FLOAT32_EPS * max(out_features, in_features) * scale


def truncate_svd(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int, tolerance: float
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Keep the ``rank`` largest singular values above ``tolerance`` as balanced factors.

    The factors are ``B = U_k sqrt(S_k)`` and ``A = sqrt(S_k) Vh_k``, so that neither
    carries the whole magnitude (which matters when they are stored in float16).

    Returns:
        ``lora_B: (out, k)``, ``lora_A: (k, in)``, the relative error of the truncation
        and ``k``. When no singular value is above ``tolerance`` the delta is zero:
        ``k`` is 0, the error is 0 and the factors are a zero column and a zero row.
    """
    kept_rank = min(rank, int((S > tolerance).sum()))
    if kept_rank == 0:
        return U.new_zeros(U.shape[0], 1), Vh.new_zeros(1, Vh.shape[1]), 0.0, 0
    total = float(torch.linalg.norm(S))
    dropped = float(torch.linalg.norm(S[kept_rank:]))
    root = S[:kept_rank].sqrt()
    lora_B = U[:, :kept_rank] * root  # (out, k)
    lora_A = root[:, None] * Vh[:kept_rank]  # (k, in)
    return lora_B, lora_A, dropped / total if total > 0 else 0.0, kept_rank


def low_rank_sum(terms: list[Term], rank: int) -> ModuleResult:
    """Return the best rank-``rank`` approximation of ``sum_i w_i B_i A_i``, from the factors.

    The result has rank ``min(rank, numerical rank of the sum)``; the bias, if any,
    is the exact weighted sum of the biases.
    """
    lora_B, lora_A = concatenate(terms)
    if lora_A.shape[0] == 0:
        return zero_result(lora_B.shape[0], lora_A.shape[1], combined_bias(terms))
    U, S, Vh = factored_svd(lora_B, lora_A)
    tolerance = rank_tolerance(terms, lora_B.shape[0], lora_A.shape[1])
    new_B, new_A, error, kept_rank = truncate_svd(U, S, Vh, rank, tolerance)
    return ModuleResult(new_A, new_B, combined_bias(terms), relative_error=error, effective_rank=kept_rank)


def exact_sum(terms: list[Term]) -> ModuleResult:
    """Return ``sum_i w_i B_i A_i`` exactly, as concatenated factors of rank ``sum_i r_i``.

    Terms that cancel exactly give rank-1 zero factors.
    """
    lora_B, lora_A = concatenate(terms)
    if lora_A.shape[0] == 0:
        return zero_result(lora_B.shape[0], lora_A.shape[1], combined_bias(terms))
    return ModuleResult(lora_A, lora_B, combined_bias(terms), relative_error=0.0, effective_rank=lora_A.shape[0])


def zero_result(out_features: int, in_features: int, bias: torch.Tensor | None) -> ModuleResult:
    """Return a zero delta as rank-1 zero factors (PEFT needs ``r >= 1``), with effective rank 0."""
    zero_A = torch.zeros(1, in_features)
    zero_B = torch.zeros(out_features, 1)
    return ModuleResult(zero_A, zero_B, bias, relative_error=0.0, effective_rank=0)


def frobenius_inner(B1: torch.Tensor, A1: torch.Tensor, B2: torch.Tensor, A2: torch.Tensor) -> float:
    """Return ``<B1 A1, B2 A2>_F = trace((B1^T B2)(A2 A1^T))`` from ``r x r`` products.

    Args:
        B1: ``(out, r1)``; A1: ``(r1, in)``; B2: ``(out, r2)``; A2: ``(r2, in)``.
    """
    left = B1.T @ B2  # (r1, r2)
    right = A1 @ A2.T  # (r1, r2); trace(X Y) = sum(X * Y^T)
    return float((left.double() * right.double()).sum())


def frobenius_norm(lora_B: torch.Tensor, lora_A: torch.Tensor) -> float:
    """Return ``||B A||_F`` from the factors."""
    return math.sqrt(max(frobenius_inner(lora_B, lora_A, lora_B, lora_A), 0.0))
