"""Modules that replace a base model's layers and apply loaded adapters.

:class:`LoraLayer` wraps a ``Linear``, GPT-2 ``Conv1D`` or ``Embedding``; for input
``x`` (shape ``(B, T, in)``, or ``(B, T)`` token ids for an embedding) it returns::

    base(x) + sum_i w_i * scaling_i * (B_i @ A_i @ dropout_i(x) + b_i)

over the stack ``[(adapter_i, w_i)]`` that applies to each row. :class:`ModuleCopiesLayer`
wraps a module that adapters replace entirely (PEFT's ``modules_to_save``).

Inference adds the adapters' outputs into the base layer's output in place
(``addmm_``), which saves a full-size temporary per adapter. A routed batch is
applied segment by segment, where a segment is a run of consecutive rows with one
stack and costs two matrix products and no copies. When a stack's rows are
scattered over many segments, its rows are gathered and applied as one group
instead. When segments are short, as in token-by-token generation, the batch is
applied as two batched products over all groups. Their factors are read in place
from a bank (:mod:`lorakit.runtime.banks`) when each group has one adapter and
the adapters share a bank, and are copied into stacked tensors once per plan
otherwise. Autograd (trainable adapters, inputs that require grad), dropout in
training mode, embeddings and mixed dtypes take the out-of-place path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.adapters.copies import combine_module_copies
from lorakit.adapters.model import LoraModule
from lorakit.runtime.banks import FactorBank
from lorakit.runtime.routing import RoutingPlan, RuntimeState, Stack

# A plan that a layer applies more than once (each step of generate()) goes through the
# batched products when its segments average fewer tokens than this, because there the
# per-call overhead of the segment loop dominates. The stacked factors (a bank, or a
# copy) are set up on the second call, so a single forward never pays for them. Measured
# on a 2-core AMD EPYC CPU (benchmarks/bench_routed.py); both paths give the same results.
MIN_SEGMENT_TOKENS = 64


class LoraLayer(nn.Module):
    """Loaded adapters on top of one base layer; the base layer itself is never changed here.

    Args:
        base_layer: The original ``Linear``, ``Conv1D`` or ``Embedding``.
        kind: ``"linear"``, ``"conv1d"`` or ``"embedding"``.
        state: The runtime state shared by all layers of the model.
    """

    def __init__(self, base_layer: nn.Module, kind: str, state: RuntimeState) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.kind = kind
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_bias = nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.dropout: dict[str, float] = {}
        self.banks: dict[tuple[int, torch.dtype, torch.device], FactorBank] = {}  # by (rank, dtype, device)
        object.__setattr__(self, "_state", state)  # shared, so not registered as a submodule
        self.train(base_layer.training)  # a new module would start in training mode

    @property
    def lorakit_base_module(self) -> nn.Module:
        return self.base_layer

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def adapter_names(self) -> list[str]:
        return list(self.lora_A.keys())

    # Adapters ----------------------------------------------------------------------

    def add(self, name: str, module: LoraModule, dtype: torch.dtype, dropout: float = 0.0) -> None:
        """Store a copy of one adapter's factors, frozen, on the base layer's device in ``dtype``.

        A ``Linear`` or ``Conv1D`` layer keeps the factors in the bank of their rank
        (:mod:`lorakit.runtime.banks`). The copy does not keep the adapter file's memory
        map or the caller's tensors alive.
        """
        device = self.base_layer.weight.device
        if self.kind == "embedding":
            self.lora_A[name] = nn.Parameter(_own_copy(module.lora_A, device, dtype), requires_grad=False)
            self.lora_B[name] = nn.Parameter(_own_copy(module.lora_B, device, dtype), requires_grad=False)
        else:
            self.lora_A[name] = nn.Parameter(torch.empty(0, device=device, dtype=dtype), requires_grad=False)
            self.lora_B[name] = nn.Parameter(torch.empty(0, device=device, dtype=dtype), requires_grad=False)
            bank = self._bank_of(module.lora_A.shape, module.lora_B.shape, dtype, device)
            bank.add(name, self.lora_A[name], self.lora_B[name], module.lora_A, module.lora_B)
        if module.lora_bias is not None:
            self.lora_bias[name] = nn.Parameter(_own_copy(module.lora_bias, device, dtype), requires_grad=False)
        self.scaling[name] = module.scaling
        self.dropout[name] = dropout

    def reserve(self, shapes: Sequence[tuple[torch.Size, torch.Size]], dtype: torch.dtype) -> None:
        """Size the banks once for adapters about to be added in ``dtype``.

        ``shapes`` has one ``(lora_A.shape, lora_B.shape)`` pair per adapter.
        """
        if self.kind == "embedding":
            return
        device = self.base_layer.weight.device
        for (shape_A, shape_B), count in Counter(shapes).items():
            self._bank_of(shape_A, shape_B, dtype, device).reserve(count)

    def _bank_of(self, shape_A: torch.Size, shape_B: torch.Size, dtype: torch.dtype, device: torch.device) -> FactorBank:
        """Return the bank for factors of shapes ``(r, in)`` and ``(out, r)``, creating it if needed."""
        key = (shape_A[0], dtype, device)
        if key not in self.banks:
            self.banks[key] = FactorBank(shape_A[0], shape_A[1], shape_B[0], dtype, device)
        return self.banks[key]

    def remove(self, name: str) -> None:
        for bank in self.banks.values():
            if name in bank.slots:
                bank.remove(name)
        for store in (self.lora_A, self.lora_B, self.lora_bias):
            if name in store:
                del store[name]
        self.scaling.pop(name, None)
        self.dropout.pop(name, None)

    def drop_empty_banks(self) -> None:
        """Drop banks without members: emptied by unloading, or reserved by a load that failed."""
        for key, bank in list(self.banks.items()):
            if not bank.names:
                del self.banks[key]

    def _apply(self, fn: Any, recurse: bool = True) -> LoraLayer:
        """Convert or move the layer (``module.to()``, ``half()``...), then put the factors back into banks.

        ``nn.Module._apply`` gives each parameter its own converted storage, which
        leaves the banks out of date.
        """
        super()._apply(fn, recurse)
        for key, bank in list(self.banks.items()):
            if all(bank.is_current(name) for name in bank.names):
                continue
            del self.banks[key]
            for name in bank.names:
                lora_A, lora_B = self.lora_A[name], self.lora_B[name]
                new_bank = self._bank_of(lora_A.shape, lora_B.shape, lora_A.dtype, lora_A.device)
                if not new_bank.names:
                    new_bank.reserve(len(bank.names))
                new_bank.add(name, lora_A, lora_B, lora_A.detach(), lora_B.detach())
        return self

    def bank_for(self, names: list[str]) -> FactorBank | None:
        """Return the bank whose slots contain ``names``; ``None`` if they are not all in one bank.

        Adapters that are trainable or have a ``lora_bias`` are left out, because the
        batched products apply neither.
        """
        if not names or names[0] not in self.lora_A:
            return None
        first = self.lora_A[names[0]]
        bank = self.banks.get((first.shape[0], first.dtype, first.device))
        if bank is None:
            return None
        for name in names:
            if not bank.is_current(name) or name in self.lora_bias:
                return None
            if self.lora_A[name].requires_grad or self.lora_B[name].requires_grad:
                return None
        return bank

    def export(self, name: str, fan_in_fan_out: bool) -> LoraModule:
        """Return one adapter's factors as a :class:`LoraModule` (detached tensors)."""
        bias = self.lora_bias[name].detach() if name in self.lora_bias else None
        return LoraModule(
            lora_A=self.lora_A[name].detach(),
            lora_B=self.lora_B[name].detach(),
            scaling=self.scaling[name],
            kind="embedding" if self.kind == "embedding" else "linear",
            lora_bias=bias,
            fan_in_fan_out=fan_in_fan_out,
        )

    # Forward -----------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        state: RuntimeState = self._state
        if state.routing is not None:
            plan = state.routing.for_batch(x.shape[0], x.device, state.routing_expands)
            route = plan.layer_cache.get(id(self))
            if route is None:
                route = plan.layer_cache[id(self)] = _LayerRoute.prepare(self, plan)
            if route.dtype is not None and self._may_add_in_place(x, result, route.dtype):
                return route.add_in_place(x, result)
            return self._routed(x, result, plan)
        stack = state.current_stack_for_layer()
        if not stack:
            return result
        terms = self._terms(stack)
        if terms == ():
            return result  # no adapter of the stack targets this layer
        dtype = _common_dtype(terms)
        if dtype is not None and self._may_add_in_place(x, result, dtype):
            return _add_terms_in_place(x, result, terms)
        return self._add_stack(x, result, stack)

    def _terms(self, stack: Stack) -> tuple[_Term, ...] | None:
        """Return the stack's terms on this layer, or ``None`` if one must go through autograd or dropout."""
        terms = []
        for name, weight in stack:
            if name not in self.lora_A:
                continue
            lora_A, lora_B = self.lora_A[name], self.lora_B[name]
            bias = self.lora_bias[name] if name in self.lora_bias else None
            if lora_A.requires_grad or lora_B.requires_grad or (bias is not None and bias.requires_grad):
                return None
            if self.training and self.dropout.get(name, 0.0):
                return None
            terms.append(_Term(lora_A, lora_B, weight * self.scaling[name], bias))
        return tuple(terms)

    def _may_add_in_place(self, x: torch.Tensor, result: torch.Tensor, dtype: torch.dtype) -> bool:
        """Tell whether adapter outputs may be added into ``result`` in place, in ``dtype``."""
        if self.kind == "embedding" or x.dtype != dtype or result.dtype != dtype or not result.is_contiguous():
            return False
        if torch.is_grad_enabled() and (x.requires_grad or result.requires_grad):
            return False
        # A forward hook on the base layer may keep a reference to its output.
        return not (self.base_layer._forward_hooks or nn.modules.module._global_forward_hooks)

    def _add_stack(self, x: torch.Tensor, result: torch.Tensor, stack: Stack) -> torch.Tensor:
        for name, weight in stack:
            if name in self.lora_A:
                result = result + self._adapter_output(name, x, weight).to(result.dtype)
        return result

    def _routed(self, x: torch.Tensor, result: torch.Tensor, plan: RoutingPlan) -> torch.Tensor:
        for group in plan.groups:
            stack = [(name, weight) for name, weight in group.stack if name in self.lora_A]
            if not stack:
                continue
            if group.all_rows:
                result = self._add_stack(x, result, tuple(stack))
                continue
            rows = x.index_select(0, group.rows)  # (n, T, in)
            delta = self._adapter_output(stack[0][0], rows, stack[0][1])
            for name, weight in stack[1:]:
                delta = delta + self._adapter_output(name, rows, weight)
            result = result.index_add(0, group.rows, delta.to(result.dtype))
        return result

    def _adapter_output(self, name: str, x: torch.Tensor, weight: float) -> torch.Tensor:
        """Return ``weight * scaling * (B @ A @ dropout(x) + b)`` for one adapter."""
        lora_A, lora_B = self.lora_A[name], self.lora_B[name]
        factor = weight * self.scaling[name]
        if self.kind == "embedding":
            base = self.base_layer
            hidden = F.embedding(
                x, lora_A.T, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse
            )  # (B, T, r)
            output = hidden @ lora_B.T  # (B, T, dim)
            embed_scale = getattr(base, "embed_scale", None)  # Gemma-style scaled embeddings
            if embed_scale is not None:
                output = output * embed_scale.to(output.dtype)
            return output * factor
        x = x.to(lora_A.dtype)
        p = self.dropout.get(name, 0.0)
        if p and self.training:
            x = F.dropout(x, p=p, training=True)
        # The same operations as the in-place path (scale the (B, T, r) hidden state, then
        # multiply by lora_B.T) make both paths give the same bits for adapters without lora_bias.
        hidden = F.linear(x, lora_A) * factor  # (B, T, r)
        output = hidden @ lora_B.T  # (B, T, out)
        if name in self.lora_bias:
            output = output + self.lora_bias[name] * factor
        return output

    # Merging -----------------------------------------------------------------------

    def merged_parameters(self, stack: Stack, fan_in_fan_out: bool) -> dict[str, torch.Tensor]:
        """Return the base weight (and bias) with the stack folded in, in the base dtype.

        The sum is computed in float32 (or float64 for a float64 base). Nothing is changed.
        """
        stack = tuple((name, weight) for name, weight in stack if name in self.lora_A)
        if not stack:
            return {}
        weight = self.base_layer.weight
        compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
        total = weight.detach().to(compute)
        bias_total = None
        for name, stack_weight in stack:
            delta = self.export(name, fan_in_fan_out).delta(compute)
            total = total + stack_weight * delta
            bias_delta = self.export(name, fan_in_fan_out).bias_delta(compute)
            if bias_delta is not None:
                if bias_total is None:
                    bias_total = self.base_layer.bias.detach().to(compute)
                bias_total = bias_total + stack_weight * bias_delta
        merged = {"weight": total.to(weight.dtype)}
        if bias_total is not None:
            merged["bias"] = bias_total.to(self.base_layer.bias.dtype)
        return merged


class ModuleCopiesLayer(nn.Module):
    """Full per-adapter copies of one module (PEFT's ``modules_to_save``).

    For a stack with weights ``w_i`` each parameter is
    ``base + sum_i w_i * (copy_i - base)``: a copy acts as a dense delta, adapters
    without a copy add nothing, and one adapter at weight 1 gives its copy exactly.
    """

    def __init__(self, base_module: nn.Module, state: RuntimeState) -> None:
        super().__init__()
        self.base_module = base_module
        self.copies = nn.ModuleDict()
        object.__setattr__(self, "_state", state)
        self._combined: dict[Stack, dict[str, torch.Tensor]] = {}
        self.train(base_module.training)

    @property
    def lorakit_base_module(self) -> nn.Module:
        return self.base_module

    @property
    def adapter_names(self) -> list[str]:
        return list(self.copies.keys())

    def add(self, name: str, copy: nn.Module) -> None:
        self.copies[name] = copy
        self._combined.clear()

    def remove(self, name: str) -> None:
        if name in self.copies:
            del self.copies[name]
        self._combined.clear()

    def invalidate(self) -> None:
        self._combined.clear()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        state: RuntimeState = self._state
        if state.routing is None:
            return self._run(state.current_stack_for_layer(), args, kwargs)
        x = args[0]
        plan = state.routing.for_batch(x.shape[0], x.device, state.routing_expands)
        if len(plan.groups) == 1:
            return self._run(plan.groups[0].stack, args, kwargs)
        output = None
        for group in plan.groups:
            rows_output = self._run(group.stack, (x.index_select(0, group.rows), *args[1:]), kwargs)
            if output is None:
                output = rows_output.new_empty((x.shape[0], *rows_output.shape[1:]))
            output.index_copy_(0, group.rows, rows_output)
        return output

    def _run(self, stack: Stack, args: tuple, kwargs: dict) -> Any:
        stack = tuple((name, weight) for name, weight in stack if name in self.copies)
        if not stack:
            return self.base_module(*args, **kwargs)
        if len(stack) == 1 and stack[0][1] == 1.0:
            return self.copies[stack[0][0]](*args, **kwargs)
        return torch.func.functional_call(self.base_module, self.stack_parameters(stack), args, kwargs)

    def stack_parameters(self, stack: Stack) -> dict[str, torch.Tensor]:
        """Return ``base + sum_i w_i * (copy_i - base)`` for every parameter, cached per stack.

        The rule is :func:`lorakit.adapters.copies.combine_module_copies`, which
        ``lorakit combine`` uses too. Stacks with trainable copies are not cached, so
        gradients reach the copies.
        """
        stack = tuple((name, weight) for name, weight in stack if name in self.copies)
        trainable = any(p.requires_grad for name, _ in stack for p in self.copies[name].parameters())
        if stack in self._combined and not trainable:
            return self._combined[stack]
        base = {name: parameter.detach() for name, parameter in self.base_module.named_parameters()}
        copies = [dict(self.copies[name].named_parameters()) for name, _ in stack]
        combined = combine_module_copies(copies, [weight for _, weight in stack], base, path=type(self.base_module).__name__)
        combined = base if combined is None else combined
        if not trainable:
            self._combined[stack] = combined
        return combined


class _Term(NamedTuple):
    """One adapter's part of a stack on one layer: ``alpha * (B @ A @ x + bias)``."""

    lora_A: torch.Tensor  # (r, in)
    lora_B: torch.Tensor  # (out, r)
    alpha: float  # the stack weight times the adapter's scaling
    bias: torch.Tensor | None  # (out,)


def _own_copy(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Return a contiguous copy of ``tensor`` on ``device`` in ``dtype``, in one pass."""
    return torch.empty(tensor.shape, device=device, dtype=dtype).copy_(tensor.detach())


def _common_dtype(terms: tuple[_Term, ...] | None) -> torch.dtype | None:
    """Return the dtype of every factor in ``terms``; ``None`` if they differ or ``terms`` is ``None``."""
    if terms is None:
        return None
    dtypes = {t.lora_A.dtype for t in terms} | {t.lora_B.dtype for t in terms}
    dtypes |= {t.bias.dtype for t in terms if t.bias is not None}
    if len(dtypes) > 1:
        return None
    return dtypes.pop() if dtypes else torch.float32


def _add_terms_in_place(x: torch.Tensor, result: torch.Tensor, terms: tuple[_Term, ...]) -> torch.Tensor:
    """Add ``sum_t alpha_t * (B_t @ A_t @ x + bias_t)`` into ``result`` (rows of any shape)."""
    x2 = x.reshape(-1, x.shape[-1])  # (tokens, in)
    out2 = result.view(-1, result.shape[-1])  # (tokens, out)
    for term in terms:
        hidden = F.linear(x2, term.lora_A).mul_(term.alpha)  # (tokens, r)
        out2.addmm_(hidden, term.lora_B.T)  # (tokens, r) @ (r, out)
        if term.bias is not None:
            out2.add_(term.bias, alpha=term.alpha)
    return result


@dataclass
class _LayerRoute:
    """One layer's preparation of one routing plan, made on the layer's first call with the plan.

    Attributes:
        layer: The layer, for its factor banks.
        segments: ``(start, stop, terms)`` per run of consecutive rows with a stack
            that has factors on this layer.
        groups: ``(rows, terms)`` per group of rows with such a stack.
        group_names: Per group, the names of its stack's adapters that have factors on this layer.
        dtype: The factors' common dtype, or ``None`` when the plan must take the
            out-of-place path (trainable factors, active dropout, mixed dtypes, embeddings).
    """

    layer: LoraLayer
    segments: list[tuple[int, int, tuple[_Term, ...]]]
    groups: list[tuple[torch.Tensor, tuple[_Term, ...]]]
    group_names: list[list[str]]
    batch_size: int
    dtype: torch.dtype | None
    calls: int = 0
    _stacked: _StackedGroups | None = None

    @classmethod
    def prepare(cls, layer: LoraLayer, plan: RoutingPlan) -> _LayerRoute:
        terms_of: dict[Stack, tuple[_Term, ...] | None] = {group.stack: layer._terms(group.stack) for group in plan.groups}
        usable = layer.kind != "embedding" and all(terms is not None for terms in terms_of.values())
        segments = [(s.start, s.stop, terms_of[s.stack]) for s in plan.segments if terms_of[s.stack]]
        used = [g for g in plan.groups if terms_of[g.stack]]
        groups = [(g.rows, terms_of[g.stack]) for g in used]
        names = [[name for name, _ in g.stack if name in layer.lora_A] for g in used]
        dtype = _common_dtype(tuple(t for _, terms in groups for t in terms)) if usable else None
        return cls(layer, segments, groups, names, plan.batch_size, dtype)  # type: ignore[arg-type]

    def add_in_place(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """Add every row's stack output into ``result`` in place and return it."""
        if not self.segments:
            return result
        x3 = x.reshape(self.batch_size, -1, x.shape[-1])  # (B, T, in)
        out3 = result.view(self.batch_size, -1, result.shape[-1])  # (B, T, out)
        self.calls += 1
        tokens_per_segment = x3.shape[0] * x3.shape[1] / len(self.segments)
        has_bias = any(t.bias is not None for _, terms in self.groups for t in terms)
        if self.calls == 1 or tokens_per_segment >= MIN_SEGMENT_TOKENS or has_bias:
            if len(self.segments) > 2 * len(self.groups):
                self._add_by_group(x3, out3)  # rows of a stack are scattered: fewer, larger products
            else:
                for start, stop, terms in self.segments:
                    _add_terms_in_place(x3[start:stop], out3[start:stop], terms)
            return result
        if self._stacked is None:
            self._stacked = self._stack_groups()
        self._stacked.add_in_place(x3, out3)
        return result

    def _stack_groups(self) -> _StackedGroups:
        """Lay out the groups' factors for batched products: in place in a bank where it can, else as a copy."""
        if all(len(names) == 1 for names in self.group_names):
            names = [group[0] for group in self.group_names]
            bank = self.layer.bank_for(names)
            if bank is not None:
                alphas = [terms[0].alpha for _, terms in self.groups]
                stacked = _StackedGroups.from_bank(bank, names, alphas, [rows for rows, _ in self.groups], self.batch_size)
                if stacked is not None:
                    return stacked
        return _StackedGroups.build(self.groups, self.batch_size)

    def _add_by_group(self, x3: torch.Tensor, out3: torch.Tensor) -> None:
        """Gather each group's rows, apply its stack, and add the result back into its rows."""
        for rows, terms in self.groups:
            x_rows = x3.index_select(0, rows).flatten(0, 1)  # (n*T, in)
            delta = None
            for term in terms:
                hidden = F.linear(x_rows, term.lora_A).mul_(term.alpha)  # (n*T, r)
                if delta is None:
                    delta = hidden @ term.lora_B.T  # (n*T, out)
                else:
                    delta.addmm_(hidden, term.lora_B.T)
                if term.bias is not None:
                    delta.add_(term.bias, alpha=term.alpha)
            out3.index_add_(0, rows, delta.view(len(rows), x3.shape[1], -1))


class _StackedGroups:
    """A plan's factors as ``(S, ...)`` tensors, one slot per group, for batched products.

    Slot ``s`` has ``A_s`` (``(R, in)``), ``B_s`` and a scale ``alpha_s``, and its rows
    get ``alpha_s * B_s @ A_s @ x``. :meth:`from_bank` takes the slots as a view of a
    :class:`~lorakit.runtime.banks.FactorBank`. :meth:`build` copies them: group ``g``
    gets ``A_g = [A_1; ...; A_k]`` and ``B_g = [alpha_1 B_1, ..., alpha_k B_k]`` over its
    stack, zero-padded to the largest summed rank. Slots with fewer rows than the
    largest (``n`` rows) are padded by repeating a row whose outputs are dropped.
    """

    def __init__(self, lora_A: torch.Tensor, lora_B_t: torch.Tensor, alpha: torch.Tensor | None) -> None:
        self.lora_A_t = lora_A.transpose(1, 2)  # (S, in, R)
        self.lora_B_t = lora_B_t  # (S, R, out)
        self.alpha = alpha  # (S, 1, 1), or None when the scales are inside lora_B_t
        self.rows_per_slot = 0
        self.in_order = True  # slot s is rows s*n .. (s+1)*n - 1, so x needs no gather
        self.gather_rows: torch.Tensor | None = None  # (S * n,) row of x for each padded place
        self.kept_places: torch.Tensor | None = None  # (rows,) padded places that are real rows
        self.scatter_rows: torch.Tensor | None = None  # (rows,) row of the output for each kept place

    @classmethod
    def build(cls, groups: list[tuple[torch.Tensor, tuple[_Term, ...]]], batch_size: int) -> _StackedGroups:
        first = groups[0][1][0]
        device, dtype = first.lora_A.device, first.lora_A.dtype
        in_features, out_features = first.lora_A.shape[1], first.lora_B.shape[0]
        rank = max(sum(t.lora_A.shape[0] for t in terms) for _, terms in groups)
        lora_A = torch.zeros(len(groups), rank, in_features, device=device, dtype=dtype)  # (G, R, in)
        lora_B_t = torch.zeros(len(groups), rank, out_features, device=device, dtype=dtype)  # (G, R, out)
        for index, (_, terms) in enumerate(groups):
            offset = 0
            for term in terms:
                r = term.lora_A.shape[0]
                lora_A[index, offset : offset + r] = term.lora_A
                lora_B_t[index, offset : offset + r] = term.lora_B.T * term.alpha
                offset += r
        stacked = cls(lora_A, lora_B_t, None)
        stacked._arrange([rows for rows, _ in groups], batch_size)
        return stacked

    @classmethod
    def from_bank(
        cls, bank: FactorBank, names: list[str], alphas: list[float], rows: list[torch.Tensor], batch_size: int
    ) -> _StackedGroups | None:
        """Return a layout that reads the run of bank slots containing ``names`` in place.

        Group ``g`` applies ``names[g]`` at scale ``alphas[g]``. Returns ``None`` when two
        groups use one adapter, or when the run is more than twice as long as the number
        of groups, because each unused slot in the run costs as much as a group.
        """
        slots = [bank.slots[name] for name in names]
        if len(set(slots)) < len(slots):
            return None
        low, high = min(slots), max(slots)
        span = high - low + 1
        if span > 2 * len(slots):
            return None
        device = rows[0].device
        alpha = torch.zeros(span, 1, 1, dtype=bank.lora_A.dtype, device=bank.lora_A.device)
        rows_per_slot = [torch.empty(0, dtype=torch.long, device=device) for _ in range(span)]
        for slot, scale, group_rows in zip(slots, alphas, rows):
            alpha[slot - low] = scale
            rows_per_slot[slot - low] = group_rows
        stacked = cls(bank.lora_A[low : high + 1], bank.lora_B_t[low : high + 1], alpha)
        stacked._arrange(rows_per_slot, batch_size)
        return stacked

    def _arrange(self, rows_per_slot: list[torch.Tensor], batch_size: int) -> None:
        """Work out how the batch's rows map to ``(slot, place)``, padding every slot to ``n`` places."""
        sizes = [len(rows) for rows in rows_per_slot]
        self.rows_per_slot = max(sizes)
        order = torch.cat(rows_per_slot)
        if len(set(sizes)) == 1 and order.tolist() == list(range(batch_size)):
            return
        self.in_order = False
        n = self.rows_per_slot
        filler = order[:1]  # any real row: its padded outputs are dropped
        padded = [torch.cat([rows, filler.expand(n - len(rows))]) for rows in rows_per_slot]
        self.gather_rows = torch.cat(padded)
        self.kept_places = torch.cat(
            [torch.arange(len(rows), device=order.device) + s * n for s, rows in enumerate(rows_per_slot)]
        )
        self.scatter_rows = order

    def add_in_place(self, x3: torch.Tensor, out3: torch.Tensor) -> None:
        """Add ``alpha_s * B_s @ A_s @ x`` into the output rows of every slot."""
        slots, n, tokens = self.lora_A_t.shape[0], self.rows_per_slot, x3.shape[1]
        if self.in_order:
            hidden = torch.bmm(x3.reshape(slots, n * tokens, -1), self.lora_A_t)  # (S, n*T, R)
            if self.alpha is not None:
                hidden.mul_(self.alpha)
            out3.view(slots, n * tokens, -1).baddbmm_(hidden, self.lora_B_t)  # (S, n*T, out)
            return
        rows = x3.index_select(0, self.gather_rows).view(slots, n * tokens, -1)  # (S, n*T, in)
        hidden = torch.bmm(rows, self.lora_A_t)  # (S, n*T, R)
        if self.alpha is not None:
            hidden.mul_(self.alpha)
        delta = torch.bmm(hidden, self.lora_B_t)  # (S, n*T, out)
        delta = delta.view(slots * n, tokens, -1).index_select(0, self.kept_places)  # (B', T, out)
        out3.index_add_(0, self.scatter_rows, delta)
