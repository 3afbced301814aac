"""TIES, DARE and magnitude pruning against plain reference implementations on small matrices."""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils

from lorakit.adapters.model import Adapter, LoraModule
from lorakit.combine import combine_adapters
from lorakit.combine import dense as dense_module
from lorakit.combine.dense import low_rank_approximation, module_generator, randomized_svd
from lorakit.combine.sparsify import random_prune
from lorakit.combine.types import CombineOptions
from lorakit.combine.dare_linear import merge_dare_linear
from lorakit.combine.dare_ties import merge_dare_ties
from lorakit.combine.magnitude_prune import merge_magnitude_prune
from lorakit.combine.ties import merge_ties

SHAPE = (6, 5)


def _deltas(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _reference_trim(delta: torch.Tensor, density: float) -> list[list[float]]:
    """Keep the int(density * n) entries of largest magnitude, by sorting a Python list."""
    values = delta.tolist()
    flat = sorted((abs(v), i, j) for i, row in enumerate(values) for j, v in enumerate(row))
    keep = {(i, j) for _, i, j in flat[len(flat) - int(density * len(flat)):]}
    return [[v if (i, j) in keep else 0.0 for j, v in enumerate(row)] for i, row in enumerate(values)]


def _reference_ties(entries: list[list[list[float]]], weights: list[float], sign_method: str) -> torch.Tensor:
    """Elect a sign per entry from the weighted values, then average the agreeing weighted values."""
    rows, columns = len(entries[0]), len(entries[0][0])
    result = torch.zeros(rows, columns, dtype=torch.float64)
    for i in range(rows):
        for j in range(columns):
            weighted = [w * e[i][j] for w, e in zip(weights, entries)]
            if sign_method == "total":
                vote = sum(weighted)
            else:
                vote = sum((v > 0) - (v < 0) for v in weighted)
            sign = 1.0 if vote >= 0 else -1.0
            agreeing = [v for v in weighted if v != 0 and (v > 0) == (sign > 0)]
            result[i, j] = sum(agreeing) / len(agreeing) if agreeing else 0.0
    return result


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
@pytest.mark.parametrize("weights", [[1.0, 0.5, 2.0], [1.0, -0.7, 0.3]], ids=["positive", "negative"])
def test_ties_matches_reference(weights, sign_method):
    deltas = _deltas()
    density = 0.4
    options = CombineOptions(density=density, majority_sign=sign_method)
    got = merge_ties(deltas, torch.tensor(weights), options, torch.Generator())

    trimmed = [_reference_trim(delta, density) for delta in deltas]
    expected = _reference_ties(trimmed, weights, sign_method)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
def test_ties_equals_peft_for_equal_weights(sign_method):
    # With equal positive weights, electing signs on weighted or unweighted deltas agrees.
    deltas = _deltas(seed=1)
    weights = torch.tensor([0.5, 0.5, 0.5])
    options = CombineOptions(density=0.5, majority_sign=sign_method)
    got = merge_ties(deltas, weights, options, torch.Generator())

    expected = merge_utils.ties(list(deltas), weights, density=0.5, majority_sign_method=sign_method)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_magnitude_prune_matches_reference_and_peft():
    deltas = _deltas(seed=2)
    weights = [0.3, -1.0, 2.0]
    got = merge_magnitude_prune(deltas, torch.tensor(weights), CombineOptions(density=0.3), torch.Generator())

    trimmed = [torch.tensor(_reference_trim(delta, 0.3)) for delta in deltas]
    expected = sum(w * t for w, t in zip(weights, trimmed))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    peft_result = merge_utils.magnitude_prune(list(deltas), torch.tensor(weights), density=0.3)
    torch.testing.assert_close(got, peft_result, atol=1e-6, rtol=1e-6)


def _dare_masks(deltas: torch.Tensor, density: float, seed: int) -> list[torch.Tensor]:
    """The keep-masks DARE draws, from the same generator stream as the implementation."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(delta.shape, generator=generator) < density for delta in deltas]


def test_dare_linear_matches_reference():
    deltas = _deltas(seed=3)
    weights = [1.0, -0.5, 0.25]
    got = merge_dare_linear(deltas, torch.tensor(weights), CombineOptions(density=0.6), torch.Generator().manual_seed(7))

    masks = _dare_masks(deltas, 0.6, 7)
    expected = sum(w * d * m / 0.6 for w, d, m in zip(weights, deltas, masks))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_dare_ties_matches_reference():
    deltas = _deltas(seed=4)
    weights = [1.0, 0.5, -0.8]
    options = CombineOptions(density=0.5, majority_sign="total")
    got = merge_dare_ties(deltas, torch.tensor(weights), options, torch.Generator().manual_seed(9))

    masks = _dare_masks(deltas, 0.5, 9)
    pruned = [(d * m / 0.5).tolist() for d, m in zip(deltas, masks)]
    expected = _reference_ties(pruned, weights, "total")
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-6)


def test_dare_rescale_keeps_expectation():
    delta = torch.randn(8, 8, generator=torch.Generator().manual_seed(5))
    draws = torch.stack([random_prune(delta, 0.5, torch.Generator().manual_seed(seed)) for seed in range(2000)])

    # Each entry's mean over 2000 draws has a standard error of |x| / sqrt(2000) ~ 0.022 |x|.
    torch.testing.assert_close(draws.mean(dim=0), delta, atol=0.0, rtol=0.12)


def _adapters() -> list[Adapter]:
    config = {"peft_type": "LORA", "target_modules": ["proj"]}
    adapters = []
    for seed, r in ((1, 3), (2, 4)):
        generator = torch.Generator().manual_seed(seed)
        module = LoraModule(torch.randn(r, 10, generator=generator), torch.randn(12, r, generator=generator), 1.5)
        adapters.append(Adapter(f"a{seed}", config, {"layer.proj": module}))
    return adapters


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_is_reproducible_with_seed(method):
    adapters = _adapters()
    first, first_report = combine_adapters(adapters, [1.0, 1.0], method, density=0.5, seed=123)
    again, _ = combine_adapters(adapters, [1.0, 1.0], method, density=0.5, seed=123)
    other, _ = combine_adapters(adapters, [1.0, 1.0], method, density=0.5, seed=124)

    assert first_report.seed == 123
    assert torch.equal(first.modules["layer.proj"].lora_A, again.modules["layer.proj"].lora_A)
    assert torch.equal(first.modules["layer.proj"].lora_B, again.modules["layer.proj"].lora_B)
    assert not torch.equal(first.modules["layer.proj"].lora_B, other.modules["layer.proj"].lora_B)


def test_dare_without_seed_records_one():
    adapters = _adapters()
    first, report = combine_adapters(adapters, [1.0, 1.0], "dare_linear", density=0.5)
    again, _ = combine_adapters(adapters, [1.0, 1.0], "dare_linear", density=0.5, seed=report.seed)

    assert isinstance(report.seed, int)
    assert torch.equal(first.modules["layer.proj"].lora_B, again.modules["layer.proj"].lora_B)


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties", "magnitude_prune"])
def test_full_rank_result_equals_dense_method(method):
    adapters = _adapters()
    weights = [0.8, -0.6]
    seed = {"seed": 11} if method.startswith("dare") else {}
    combined, report = combine_adapters(adapters, weights, method, density=0.5, rank=10, **seed)

    modules = [adapter.modules["layer.proj"] for adapter in adapters]
    deltas = torch.stack([m.scaling * m.lora_B @ m.lora_A for m in modules])
    merge = {"ties": merge_ties, "dare_linear": merge_dare_linear, "dare_ties": merge_dare_ties,
             "magnitude_prune": merge_magnitude_prune}[method]
    options = CombineOptions(density=0.5, seed=11, majority_sign="total")
    expected = merge(deltas, torch.tensor(weights), options, module_generator(11, "layer.proj", "weight"))
    result = combined.modules["layer.proj"]
    torch.testing.assert_close(result.lora_B @ result.lora_A, expected, atol=1e-5, rtol=1e-5)
    assert report.modules["layer.proj"].relative_error == pytest.approx(0.0, abs=1e-5)


def test_dense_truncation_error_is_measured():
    adapters = _adapters()
    combined, report = combine_adapters(adapters, [1.0, 1.0], "ties", density=0.5, rank=2)

    modules = [adapter.modules["layer.proj"] for adapter in adapters]
    deltas = torch.stack([m.scaling * m.lora_B @ m.lora_A for m in modules])
    dense = merge_ties(deltas, torch.ones(2), CombineOptions(density=0.5), torch.Generator())
    result = combined.modules["layer.proj"]
    measured = float((dense - result.lora_B @ result.lora_A).norm() / dense.norm())
    assert result.r == 2
    assert report.modules["layer.proj"].relative_error == pytest.approx(measured, rel=1e-4)
    optimal = torch.linalg.svdvals(dense)
    assert measured == pytest.approx(float(optimal[2:].norm() / optimal.norm()), rel=1e-4)


def test_randomized_svd_is_near_optimal(monkeypatch):
    # Modules larger than EXACT_SVD_MAX_DIM use the randomized SVD; lower the limit to test it quickly.
    monkeypatch.setattr(dense_module, "EXACT_SVD_MAX_DIM", 64)
    generator = torch.Generator().manual_seed(6)
    signal = torch.randn(300, 20, generator=generator) @ torch.randn(20, 250, generator=generator)
    dense = signal + 0.01 * torch.randn(300, 250, generator=generator)
    lora_B, lora_A, error, kept_rank = low_rank_approximation(dense, 20, 0.0, torch.Generator().manual_seed(0))

    optimal = torch.linalg.svdvals(dense)
    optimal_error = float(optimal[20:].norm() / optimal.norm())
    assert kept_rank == 20
    assert error == pytest.approx(float((dense - lora_B @ lora_A).norm() / dense.norm()), rel=1e-4)
    assert error <= optimal_error * 1.01
    _, S, _ = randomized_svd(dense, 20, torch.Generator().manual_seed(0))
    torch.testing.assert_close(S[:20], optimal[:20], atol=0.0, rtol=1e-4)
