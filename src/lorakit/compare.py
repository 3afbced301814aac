"""Comparing adapters: delta norms, pairwise cosine similarity and sign conflicts, per module and overall.

For deltas ``D_i = scaling_i * B_i @ A_i`` of one module, the Frobenius inner product
comes from ``r x r`` matrices, never from the dense delta::

    <D_i, D_j>_F = s_i s_j trace((B_i^T B_j)(A_j A_i^T)),    cos(i, j) = <D_i, D_j> / (||D_i|| ||D_j||)

Overall figures treat all of an adapter's deltas as one vector: inner products and
squared norms add up over modules, and a module that only one adapter targets counts
as a zero delta in the other. The sign conflict of a pair is the fraction of entries,
among those non-zero in both deltas, whose signs differ. It needs the dense deltas,
which are built one module at a time. Two unrelated adapters have a cosine near 0
and a sign conflict near 0.5, and TIES' sign election only changes entries that conflict.
LoRA biases (``lora_bias``) are not part of these figures.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorakit.adapters.io import read_adapter
from lorakit.adapters.model import Adapter, LoraModule
from lorakit.combine.checks import finiteness_problems, module_problems
from lorakit.combine.factored import frobenius_inner
from lorakit.errors import AdapterMismatchError

logger = logging.getLogger(__name__)

Matrix = list[list[float | None]]


@dataclass
class ModuleComparison:
    """The figures of one module; ``None`` where an adapter does not target it.

    Attributes:
        path: The module path.
        norms: ``||D_i||_F`` per adapter.
        cosine: ``n x n`` cosine similarities.
        sign_conflict: ``n x n`` fractions of conflicting signs, or ``None`` when not computed.
    """

    path: str
    norms: list[float | None]
    cosine: Matrix
    sign_conflict: Matrix | None = None


@dataclass
class Comparison:
    """Figures for a set of adapters, per module and overall (all modules as one vector)."""

    names: list[str]
    norms: list[float]
    cosine: Matrix
    sign_conflict: Matrix | None
    modules: list[ModuleComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_folders(paths: Sequence[str | os.PathLike], *, signs: bool = True, trust_pickle: bool = False) -> Comparison:
    """Read adapter folders and compare them; see :func:`compare_adapters`."""
    adapters = [read_adapter(path, trust_pickle=trust_pickle) for path in paths]
    return compare_adapters(adapters, signs=signs)


def compare_adapters(adapters: Sequence[Adapter], *, signs: bool = True) -> Comparison:
    """Compare the deltas of ``adapters`` module by module and overall.

    Args:
        adapters: Two or more adapters for one base model.
        signs: Also compute sign conflicts, which needs each module's dense deltas.

    Raises:
        AdapterMismatchError: Fewer than two adapters, a module with different shapes
            in two adapters, or NaN or infinity in a factor.
    """
    _check(adapters)
    names = _unique_names(adapters)
    count = len(adapters)
    paths = list(dict.fromkeys(path for adapter in adapters for path in adapter.modules))
    inner_total = torch.zeros(count, count, dtype=torch.float64)
    conflicts = torch.zeros(count, count, dtype=torch.float64)
    both_nonzero = torch.zeros(count, count, dtype=torch.float64)
    modules = []
    for path in paths:
        present = [adapter.modules.get(path) for adapter in adapters]
        inner = _inner_products(present)
        inner_total += torch.nan_to_num(inner, nan=0.0)
        module = ModuleComparison(path, _norms(inner), _cosines(inner))
        if signs:
            module_conflicts, module_counts = _sign_conflicts(present)
            conflicts += module_conflicts
            both_nonzero += module_counts
            module.sign_conflict = _fractions(module_conflicts, module_counts, present)
        modules.append(module)
    overall_signs = _fractions(conflicts, both_nonzero, [True] * count) if signs else None
    return Comparison(names, _norms(inner_total), _cosines(inner_total), overall_signs, modules)


def _check(adapters: Sequence[Adapter]) -> None:
    if len(adapters) < 2:
        raise AdapterMismatchError(f"Comparing needs at least two adapters; got {len(adapters)}.")
    problems = module_problems(adapters, None) + finiteness_problems(adapters)
    if problems:
        raise AdapterMismatchError("The adapters cannot be compared:\n- " + "\n- ".join(problems))


def _unique_names(adapters: Sequence[Adapter]) -> list[str]:
    names = [adapter.name for adapter in adapters]
    return [f"{name}#{index + 1}" if names.count(name) > 1 else name for index, name in enumerate(names)]


def _scaled_factors(module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
    return module.lora_B.float() * module.scaling, module.lora_A.float()


def _inner_products(present: list[LoraModule | None]) -> torch.Tensor:
    """Return the ``n x n`` matrix of ``<D_i, D_j>_F``, NaN where an adapter lacks the module."""
    count = len(present)
    inner = torch.full((count, count), math.nan, dtype=torch.float64)
    factors = [_scaled_factors(m) if m is not None else None for m in present]
    for i in range(count):
        for j in range(i, count):
            if factors[i] is not None and factors[j] is not None:
                inner[i, j] = inner[j, i] = frobenius_inner(*factors[i], *factors[j])
    return inner


def _norms(inner: torch.Tensor) -> list[float | None]:
    return [None if math.isnan(v) else math.sqrt(max(v, 0.0)) for v in inner.diagonal().tolist()]


def _cosines(inner: torch.Tensor) -> Matrix:
    norms = _norms(inner)
    count = len(norms)
    result: Matrix = [[None] * count for _ in range(count)]
    for i in range(count):
        for j in range(count):
            value = float(inner[i, j])
            if math.isnan(value) or not norms[i] or not norms[j]:
                continue
            result[i][j] = value / (norms[i] * norms[j])
    return result


def _sign_conflicts(present: list[LoraModule | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``n x n`` counts of conflicting entries and of entries non-zero in both deltas."""
    count = len(present)
    conflicts = torch.zeros(count, count, dtype=torch.float64)
    totals = torch.zeros(count, count, dtype=torch.float64)
    signs = [None if m is None else torch.sign(m.delta(torch.float32)) for m in present]  # dense, one module
    for i, j in combinations(range(count), 2):
        if signs[i] is None or signs[j] is None:
            continue
        product = signs[i] * signs[j]
        conflicts[i, j] = conflicts[j, i] = float((product < 0).sum())
        totals[i, j] = totals[j, i] = float((product != 0).sum())
    return conflicts, totals


def _fractions(conflicts: torch.Tensor, totals: torch.Tensor, present: Sequence[object | None]) -> Matrix:
    count = len(present)
    result: Matrix = [[None] * count for _ in range(count)]
    for i in range(count):
        if present[i] is None:
            continue
        result[i][i] = 0.0
        for j in range(count):
            if j != i and present[j] is not None and totals[i, j] > 0:
                result[i][j] = float(conflicts[i, j] / totals[i, j])
    return result


def plot_comparison(comparison: Comparison, path: str | os.PathLike) -> Path:
    """Save heatmaps of the overall cosine and sign-conflict matrices, and of each module's cosines.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("cosine similarity (all modules)", comparison.cosine, -1.0, 1.0, "RdBu_r")]
    if comparison.sign_conflict is not None:
        panels.append(("sign conflict fraction (all modules)", comparison.sign_conflict, 0.0, 1.0, "viridis"))
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * (len(panels) + 1), 5), squeeze=False)
    for axis, (title, matrix, low, high, colours) in zip(axes[0], panels):
        _heatmap(axis, _as_array(matrix), comparison.names, comparison.names, title, low, high, colours)
    pairs = list(combinations(range(len(comparison.names)), 2))
    per_module = [[m.cosine[i][j] for i, j in pairs] for m in comparison.modules]  # (modules, pairs)
    pair_labels = [f"{comparison.names[i]} ~ {comparison.names[j]}" for i, j in pairs]
    module_labels = [m.path for m in comparison.modules]
    _heatmap(axes[0][-1], _as_array(per_module), pair_labels, module_labels, "cosine per module", -1.0, 1.0, "RdBu_r")
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def _as_array(matrix: Matrix) -> np.ndarray:
    return np.array([[math.nan if v is None else v for v in row] for row in matrix], dtype=float)


def _heatmap(axis, values, x_labels, y_labels, title, low, high, colours) -> None:
    image = axis.imshow(values, vmin=low, vmax=high, cmap=colours, aspect="auto")
    axis.set_title(title)
    axis.set_xticks(range(len(x_labels)), x_labels, rotation=45, ha="right", fontsize=8)
    small = 8 if len(y_labels) <= 24 else 5
    axis.set_yticks(range(len(y_labels)), y_labels, fontsize=small)
    if values.size <= 64:
        for (row, column), value in np.ndenumerate(values):
            if not math.isnan(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                ink = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=ink)
    axis.figure.colorbar(image, ax=axis, shrink=0.8)
