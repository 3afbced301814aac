"""What the wrapped layers apply: the active stack, or a per-row routing plan.

A *stack* is a tuple of ``(adapter name, weight)`` pairs, sorted by name so that
equal stacks compare equal; the empty tuple is the base model. Every row of a routed
batch has its own stack. Rows with the same stack form a *group*, and consecutive rows
with the same stack form a *segment*; the layers process either together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lorakit.errors import AdapterNotFoundError, RoutingError

Stack = tuple[tuple[str, float], ...]
RowSpec = str | Mapping[str, float] | None


def make_stack(spec: RowSpec, loaded: Iterable[str], what: str = "adapter") -> Stack:
    """Turn ``None``, a name or ``{name: weight}`` into a :data:`Stack`, checking names and weights.

    Zero weights are kept out of the stack: they contribute nothing.

    Raises:
        AdapterNotFoundError: A name is not loaded; the message lists the loaded ones.
        RoutingError: A weight is not a finite number, or the spec has the wrong type.
    """
    loaded = list(loaded)
    if spec is None:
        return ()
    if isinstance(spec, str):
        items: list[tuple[str, float]] = [(spec, 1.0)]
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise RoutingError(
            f"Invalid {what} {spec!r}: expected an adapter name, a dict of name to weight, or None for the base model."
        )
    stack = []
    for name, weight in items:
        if name not in loaded:
            raise AdapterNotFoundError(
                f"Adapter {name!r} is not loaded; loaded adapters: {', '.join(loaded) or 'none'}."
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RoutingError(f"Invalid weight {weight!r} for adapter {name!r}: expected a finite number.")
        if weight != 0:
            stack.append((name, float(weight)))
    return tuple(sorted(stack))


@dataclass
class RowGroup:
    """Rows of a batch that share one stack."""

    stack: Stack
    rows: torch.Tensor  # (n,) int64 row indices, sorted
    all_rows: bool  # the group is the whole batch, so no gather or scatter is needed


@dataclass
class RowSegment:
    """Consecutive rows ``start <= row < stop`` of a batch that share one stack."""

    start: int
    stop: int
    stack: Stack


@dataclass
class RoutingPlan:
    """Per-row stacks of one batch, grouped for the layers.

    ``layer_cache`` contains what each layer prepares from the plan on its first call
    (keyed by ``id(layer)``), so that the work is done once per forward or
    ``generate`` call and freed with the plan.
    """

    stacks: list[Stack]
    groups: list[RowGroup] = field(default_factory=list)
    segments: list[RowSegment] = field(default_factory=list)
    layer_cache: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)
    _expanded: dict[tuple[int, str], RoutingPlan] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, stacks: Sequence[Stack], device: torch.device | None = None) -> RoutingPlan:
        by_stack: dict[Stack, list[int]] = {}
        segments: list[RowSegment] = []
        for row, stack in enumerate(stacks):
            by_stack.setdefault(stack, []).append(row)
            if segments and segments[-1].stack == stack:
                segments[-1].stop = row + 1
            else:
                segments.append(RowSegment(row, row + 1, stack))
        groups = [
            RowGroup(stack, torch.tensor(rows, dtype=torch.long, device=device), len(rows) == len(stacks))
            for stack, rows in by_stack.items()
        ]
        return cls(list(stacks), groups, segments)

    @property
    def batch_size(self) -> int:
        return len(self.stacks)

    def for_batch(self, batch_size: int, device: torch.device, allow_expansion: bool) -> RoutingPlan:
        """Return the plan for a layer input of ``batch_size`` rows on ``device``.

        During generation transformers repeats each row for beams and returned
        sequences (``repeat_interleave``), so a batch of ``k * n`` rows maps row ``j``
        to the original row ``j // k``.
        """
        if batch_size == self.batch_size and (not self.groups or self.groups[0].rows.device == device):
            return self
        factor, remainder = divmod(batch_size, self.batch_size)
        if batch_size != self.batch_size and (remainder or not allow_expansion):
            raise RoutingError(
                f"A layer received a batch of {batch_size} rows but {self.batch_size} rows were routed; "
                "pass one adapter entry per row of the batch."
            )
        key = (factor, str(device))
        if key not in self._expanded:
            stacks = [stack for stack in self.stacks for _ in range(factor)]
            self._expanded[key] = RoutingPlan.build(stacks, device=device)
        return self._expanded[key]


@dataclass
class RuntimeState:
    """State shared by every wrapped layer of one model."""

    active: Stack = ()
    routing: RoutingPlan | None = None
    routing_expands: bool = False  # set during generate(), where beams repeat rows
    merged: Stack | None = None  # the stack folded into the base weights, if any
    version: int = 0  # bumped when adapters are loaded, unloaded or changed

    def current_stack_for_layer(self) -> Stack:
        """Return the stack a layer applies when no routing plan is set."""
        if self.merged is not None:
            return ()  # already inside the base weights
        return self.active
