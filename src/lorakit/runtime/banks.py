"""Per-layer banks: the frozen factors of one rank stored as one tensor per factor.

A routed decode step applies a different adapter to each group of rows with two
batched products, which need the groups' factors in one ``(G, r, in)`` and one
``(G, r, out)`` tensor. Copying the factors into such tensors for every ``generate``
call would hold every used adapter twice. A bank instead becomes the storage: once
built, each member's ``lora_A`` parameter is a view ``A[slot]`` and its ``lora_B``
a view ``B_t[slot].T``, so a plan whose adapters occupy a run of slots reads them
in place.

A layer builds a bank the first time a plan needs one, from every frozen adapter of
that rank, dtype and device on the layer, in load order. Building copies each member
once and frees its old storage, so the extra memory is one layer's bank at a time.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FactorBank:
    """Frozen LoRA factors of one rank on one layer, one slot per adapter.

    Attributes:
        names: Adapter names, slot by slot.
        lora_A: ``(N, r, in)`` factors; slot ``i`` is ``names[i]``'s ``lora_A``.
        lora_B_t: ``(N, r, out)`` transposed ``lora_B`` factors.
    """

    names: list[str]
    lora_A: torch.Tensor
    lora_B_t: torch.Tensor

    @property
    def slots(self) -> dict[str, int]:
        return {name: slot for slot, name in enumerate(self.names)}

    @classmethod
    def build(cls, names: list[str], lora_A: nn.ParameterDict, lora_B: nn.ParameterDict) -> FactorBank:
        """Copy the factors of ``names`` into a new bank and point their parameters at its slots."""
        bank = cls(
            names=list(names),
            lora_A=torch.stack([lora_A[name].detach() for name in names]),
            lora_B_t=torch.stack([lora_B[name].detach().T for name in names]),
        )
        for slot, name in enumerate(names):
            lora_A[name] = nn.Parameter(bank.lora_A[slot], requires_grad=False)
            lora_B[name] = nn.Parameter(bank.lora_B_t[slot].T, requires_grad=False)
        return bank

    def is_current(self, name: str, lora_A: nn.ParameterDict, lora_B: nn.ParameterDict) -> bool:
        """Tell whether ``name``'s parameters are still views of its slot.

        ``module.to()`` or an assignment to ``.data`` gives a parameter new storage, and
        the bank is then out of date for it.
        """
        slot = self.slots.get(name)
        if slot is None or name not in lora_A or name not in lora_B:
            return False
        return _same_view(lora_A[name], self.lora_A[slot]) and _same_view(lora_B[name], self.lora_B_t[slot].T)

    def release(self, lora_A: nn.ParameterDict, lora_B: nn.ParameterDict, keep: Collection[str] = ()) -> None:
        """Give each member not in ``keep`` that still views the bank its own copy.

        Once no parameter views the bank, dropping it frees its memory.
        """
        for name in self.names:
            if name in keep or not self.is_current(name, lora_A, lora_B):
                continue
            for store in (lora_A, lora_B):
                parameter = store[name]
                copy = parameter.detach().clone(memory_format=torch.contiguous_format)
                store[name] = nn.Parameter(copy, requires_grad=parameter.requires_grad)


def _same_view(parameter: torch.Tensor, view: torch.Tensor) -> bool:
    return (
        parameter.data_ptr() == view.data_ptr()
        and parameter.shape == view.shape
        and parameter.stride() == view.stride()
        and parameter.dtype == view.dtype
        and parameter.device == view.device
    )
