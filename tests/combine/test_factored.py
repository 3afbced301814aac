"""The SVD from factors against a dense float64 SVD, and the factor algebra it rests on."""

from __future__ import annotations

import pytest
import torch

from lorakit.combine.factored import (
    concatenate,
    factored_svd,
    frobenius_inner,
    frobenius_norm,
    low_rank_sum,
    truncate_svd,
)
from lorakit.combine.types import Term

# (out, in, stacked rank R): a small module, a tall one, and a 2048 x 2048 one.
SHAPES = [(48, 64, 10), (1024, 256, 40), (2048, 2048, 64)]


def _terms(out_features: int, in_features: int, total_rank: int, seed: int = 0) -> list[Term]:
    generator = torch.Generator().manual_seed(seed)
    ranks = [total_rank // 2, total_rank - total_rank // 2]
    weights = [0.8, -1.3]
    return [
        Term(w, torch.randn(r, in_features, generator=generator), torch.randn(out_features, r, generator=generator))
        for w, r in zip(weights, ranks)
    ]


def _dense(terms: list[Term]) -> torch.Tensor:
    return sum(t.weight * t.lora_B.double() @ t.lora_A.double() for t in terms)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{o}x{i}_R{r}" for o, i, r in SHAPES])
def test_factored_svd_matches_dense(shape):
    terms = _terms(*shape)
    lora_B, lora_A = concatenate(terms)
    U, S, Vh = factored_svd(lora_B, lora_A)
    dense = _dense(terms)
    # The dense singular values, as square roots of the eigenvalues of the float64 Gram
    # matrix. On 2 CPU cores this took a third of the time of svdvals on 2048 x 2048.
    eigenvalues = torch.linalg.eigvalsh(dense.T @ dense).flip(0)
    S_dense = eigenvalues.clamp(min=0).sqrt()

    rank = shape[2]
    # Singular values agree to float32 precision relative to the largest one.
    torch.testing.assert_close(S.double(), S_dense[:rank], atol=1e-5 * float(S_dense[0]), rtol=0)
    # The factors reproduce the matrix, and the singular vectors are orthonormal.
    reconstruction = (U.double() * S.double()) @ Vh.double()
    assert float((reconstruction - dense).norm() / dense.norm()) < 1e-5
    identity = torch.eye(S.shape[0], dtype=torch.float64)
    torch.testing.assert_close(U.double().T @ U.double(), identity, atol=1e-5, rtol=0)
    torch.testing.assert_close(Vh.double() @ Vh.double().T, identity, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=[f"{o}x{i}_R{r}" for o, i, r in SHAPES[:2]])
def test_truncation_matches_dense_truncation(shape):
    terms = _terms(*shape, seed=1)
    keep = shape[2] // 4
    result = low_rank_sum(terms, keep)
    dense = _dense(terms)
    U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
    best = (U[:, :keep] * S[:keep]) @ Vh[:keep]

    assert result.r == keep
    got = result.lora_B.double() @ result.lora_A.double()
    assert float((got - best).norm() / best.norm()) < 1e-5
    assert result.relative_error == pytest.approx(float(S[keep:].norm() / S.norm()), rel=1e-5)


def test_truncated_factors_are_balanced():
    terms = _terms(40, 30, 8)
    result = low_rank_sum(terms, 4)

    column_norms = result.lora_B.norm(dim=0)
    row_norms = result.lora_A.norm(dim=1)
    torch.testing.assert_close(column_norms, row_norms, atol=1e-4, rtol=1e-4)


def test_cancelling_terms_give_rank_zero():
    generator = torch.Generator().manual_seed(2)
    lora_A, lora_B = torch.randn(3, 20, generator=generator), torch.randn(16, 3, generator=generator)
    # Equal values in separate tensors, as when one adapter folder is read twice.
    terms = [Term(1.0, lora_A, lora_B), Term(-1.0, lora_A.clone(), lora_B.clone())]
    result = low_rank_sum(terms, 3)

    assert result.effective_rank == 0
    assert result.r == 1
    assert not torch.any(result.lora_B @ result.lora_A)
    assert result.relative_error == 0.0


def test_near_cancellation_drops_rounding_noise():
    generator = torch.Generator().manual_seed(3)
    lora_A, lora_B = torch.randn(4, 20, generator=generator), torch.randn(16, 4, generator=generator)
    # The same delta split differently between the factors: equal products, unequal tensors.
    terms = [Term(1.0, lora_A * 3.0, lora_B / 3.0), Term(-1.0, lora_A, lora_B)]
    result = low_rank_sum(terms, 4)

    assert result.effective_rank == 0


def test_concatenate_groups_equal_lora_A():
    generator = torch.Generator().manual_seed(4)
    lora_A = torch.randn(2, 6, generator=generator)
    B1, B2 = torch.randn(5, 2, generator=generator), torch.randn(5, 2, generator=generator)
    other_A, other_B = torch.randn(3, 6, generator=generator), torch.randn(5, 3, generator=generator)
    lora_B, stacked_A = concatenate([Term(0.5, lora_A, B1), Term(2.0, other_A, other_B), Term(-1.0, lora_A.clone(), B2)])

    assert stacked_A.shape == (5, 6)  # ranks 2 and 3; the two terms on lora_A share a block
    expected = 0.5 * B1 @ lora_A + 2.0 * other_B @ other_A - B2 @ lora_A
    torch.testing.assert_close(lora_B @ stacked_A, expected, atol=1e-5, rtol=1e-5)


def test_frobenius_inner_matches_dense():
    generator = torch.Generator().manual_seed(5)
    B1, A1 = torch.randn(30, 4, generator=generator), torch.randn(4, 25, generator=generator)
    B2, A2 = torch.randn(30, 7, generator=generator), torch.randn(7, 25, generator=generator)
    dense_1, dense_2 = (B1 @ A1).double(), (B2 @ A2).double()

    assert frobenius_inner(B1, A1, B2, A2) == pytest.approx(float((dense_1 * dense_2).sum()), rel=1e-5)
    assert frobenius_norm(B1, A1) == pytest.approx(float(dense_1.norm()), rel=1e-5)


def test_truncate_svd_respects_tolerance():
    U = torch.eye(4)
    S = torch.tensor([3.0, 2.0, 1e-9, 0.0])
    lora_B, lora_A, error, kept_rank = truncate_svd(U, S, torch.eye(4), rank=4, tolerance=1e-6)

    assert kept_rank == 2
    assert lora_B.shape == (4, 2)
    assert error == pytest.approx(1e-9 / float(S.norm()), rel=1e-3)
