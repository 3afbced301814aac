"""Modules that replace a base model's layers and apply loaded adapters.

:class:`LoraLayer` wraps a ``Linear``, GPT-2 ``Conv1D`` or ``Embedding``; for input
``x`` (shape ``(B, T, in)``, or ``(B, T)`` token ids for an embedding) it returns::

    base(x) + sum_i w_i * scaling_i * (B_i @ A_i @ dropout_i(x) + b_i)

over the stack ``[(adapter_i, w_i)]`` that applies to each row. :class:`ModuleCopiesLayer`
wraps a module that adapters replace entirely (PEFT's ``modules_to_save``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.adapters.model import LoraModule
from lorakit.runtime.routing import RoutingPlan, RuntimeState, Stack


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
        """Store one adapter's factors, frozen, on the base layer's device in ``dtype``."""
        device = self.base_layer.weight.device
        self.lora_A[name] = nn.Parameter(module.lora_A.to(device, dtype), requires_grad=False)
        self.lora_B[name] = nn.Parameter(module.lora_B.to(device, dtype), requires_grad=False)
        if module.lora_bias is not None:
            self.lora_bias[name] = nn.Parameter(module.lora_bias.to(device, dtype), requires_grad=False)
        self.scaling[name] = module.scaling
        self.dropout[name] = dropout

    def remove(self, name: str) -> None:
        for store in (self.lora_A, self.lora_B, self.lora_bias):
            if name in store:
                del store[name]
        self.scaling.pop(name, None)
        self.dropout.pop(name, None)

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
            return self._routed(x, result, state.routing.for_batch(x.shape[0], x.device, state.routing_expands))
        stack = state.current_stack_for_layer()
        if not stack:
            return result
        return self._add_stack(x, result, stack)

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
        hidden = F.linear(x, lora_A)  # (B, T, r)
        bias = self.lora_bias[name] if name in self.lora_bias else None
        return F.linear(hidden, lora_B, bias) * factor  # (B, T, out)

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
        """Return ``base + sum_i w_i * (copy_i - base)`` for every parameter, cached per stack."""
        stack = tuple((name, weight) for name, weight in stack if name in self.copies)
        if stack in self._combined and not any(p.requires_grad for n, _ in stack for p in self.copies[n].parameters()):
            return self._combined[stack]
        combined = {}
        for parameter_name, base in self.base_module.named_parameters():
            compute = torch.float64 if base.dtype == torch.float64 else torch.float32
            total = base.detach().to(compute)
            for name, weight in stack:
                copy = self.copies[name].get_parameter(parameter_name)
                total = total + weight * (copy.to(compute) - base.detach().to(compute))
            combined[parameter_name] = total.to(base.dtype)
        self._combined[stack] = combined
        return combined


def kaiming_init_(tensor: torch.Tensor) -> None:
    """Initialise ``lora_A`` as PEFT and ``nn.Linear`` do (Kaiming uniform, a = sqrt(5))."""
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))
