"""The values that combine methods take and return, one target module at a time.

Every method works in the factor layout: a module's delta is ``B @ A`` with
``A: (r, in)`` and ``B: (out, r)``, which for an embedding is the transpose of the
weight's layout. Element-wise methods (TIES, DARE) do not depend on the layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Term:
    """One adapter's factors on one module, in float32, with the scaling already applied.

    The adapter contributes ``weight * lora_B @ lora_A`` to the weight and
    ``weight * lora_bias`` to the bias.

    Attributes:
        weight: The adapter's combination weight (non-zero: zero weights are dropped earlier).
        lora_A: ``(r, in)``.
        lora_B: ``(out, r)``, the stored ``lora_B`` times the module's ``scaling``.
        lora_bias: ``(out,)``, the stored ``lora_bias`` times ``scaling``, or ``None``.
    """

    weight: float
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    lora_bias: torch.Tensor | None = None

    @property
    def r(self) -> int:
        return int(self.lora_A.shape[0])

    def delta(self) -> torch.Tensor:
        """Return the unweighted delta ``lora_B @ lora_A``, ``(out, in)``."""
        return self.lora_B @ self.lora_A


@dataclass(frozen=True)
class CombineOptions:
    """Settings shared by every module of one combination.

    Attributes:
        rank: The rank to truncate to; ``None`` for the method's default.
        density: The fraction of delta entries kept by pruning methods, in ``(0, 1]``.
        seed: The seed of DARE's random pruning.
        majority_sign: TIES' sign election: ``"total"`` (sign of the weighted sum) or
            ``"frequency"`` (the sign most adapters have).
    """

    rank: int | None = None
    density: float | None = None
    seed: int | None = None
    majority_sign: str = "total"


@dataclass
class ModuleResult:
    """The combined factors of one module, in float32, with scaling 1.

    Attributes:
        lora_A: ``(k, in)``.
        lora_B: ``(out, k)``.
        lora_bias: ``(out,)`` or ``None``.
        relative_error: ``||target - lora_B @ lora_A||_F / ||target||_F``, where the target
            is the method's untruncated result (0 for an exact result or a zero target).
        effective_rank: The rank of the result; 0 when it is exactly zero, in which case
            the factors are one row and one column of zeros (PEFT needs ``r >= 1``).
    """

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    lora_bias: torch.Tensor | None
    relative_error: float
    effective_rank: int

    @property
    def r(self) -> int:
        return int(self.lora_A.shape[0])


# A combine method on one module: (terms, options, module path) -> result.
ModuleCombiner = Callable[[list[Term], CombineOptions, str], ModuleResult]


@dataclass(frozen=True)
class CombineMethod:
    """A registered combine method, with the options it accepts.

    Attributes:
        name: The name passed to ``--method``.
        summary: One line for the method list.
        reference: A link to the paper or definition.
        combine_module: The function that combines one module.
        options: The option names it accepts, among ``rank``, ``density``, ``seed``
            and ``majority_sign``.
        required: The options it cannot run without.
        dense: Whether it builds the dense ``out x in`` delta (one module at a time).
    """

    name: str
    summary: str
    reference: str
    combine_module: ModuleCombiner
    options: frozenset[str] = frozenset({"rank"})
    required: frozenset[str] = frozenset()
    dense: bool = False
