"""Per-layer banks: the LoRA factors of one rank stored as one tensor per factor.

A routed decode step applies a different adapter to each group of rows with two
batched products, which need the groups' factors in one ``(G, r, in)`` and one
``(G, r, out)`` tensor. Copying the factors into such tensors for each ``generate``
call would hold every used adapter twice. So the factors live in banks from the
moment they are loaded. Each adapter's ``lora_A`` parameter is a view ``A[slot]`` of
its layer's bank and its ``lora_B`` a view ``B_t[slot].T``. A plan whose adapters
occupy a run of slots reads them in place.

A bank starts with room for 16 adapters and grows four times larger when it is
full, copying its members. Loading several adapters in one call reserves their slots
first, so the bank grows at most once. The bank points its members' parameters at
the new slots through ``.data``, so a parameter object (held by an optimizer, say)
stays valid. On the CPU a bank's memory is an anonymous memory map. Pages of unused
slots are never written, so they take no memory. A replaced bank returns its memory
to the system at once instead of leaving free blocks in the heap. When an adapter is
unloaded, the last member moves into its slot and the emptied pages go back to the
system. A bank a quarter full or less shrinks to half its capacity.

Copying factors into fresh memory costs one page fault per 4 KiB page. For adapters of
rank 64 those faults took about a third of the load time on the machine described
in docs/benchmarks.md. Slots that are about to be filled (reserved ones, and the members
a resize copies) are therefore backed by transparent huge pages where Linux offers
them, one fault per 2 MiB. Only huge pages that lie wholly inside those slots are
asked for, so a partly used bank takes no more memory than with small pages.

NOTE: on a virtual machine whose balloon device reports free memory to the host, the
host reclaims memory that stays free for a few seconds. There, writing reclaimed
memory was about twice as slow with huge pages as with small ones, against three
times faster for memory that was not reclaimed (``benchmarks/bench_fresh_memory.py``,
docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import functools
import math
import mmap
from pathlib import Path

import torch
from torch import nn

INITIAL_CAPACITY = 16
# Unused capacity costs address space only, so a large step saves copies: 64 adapters
# take one growth copy (of 16 members) instead of two (16 and 32) with doubling.
GROWTH = 4


class FactorBank:
    """LoRA factors of one rank, dtype and device on one layer, one slot per adapter.

    Args:
        rank: The rank ``r`` of every member.
        in_features: Columns of ``lora_A``.
        out_features: Rows of ``lora_B``.
        dtype: The factors' dtype.
        device: The factors' device.
    """

    def __init__(self, rank: int, in_features: int, out_features: int, dtype: torch.dtype, device: torch.device) -> None:
        self.names: list[str] = []
        self.slots: dict[str, int] = {}
        self.lora_A, self._map_A = _allocate((0, rank, in_features), dtype, device)  # (capacity, r, in)
        self.lora_B_t, self._map_B = _allocate((0, rank, out_features), dtype, device)  # (capacity, r, out)
        self._parameters: list[tuple[nn.Parameter, nn.Parameter]] = []  # (lora_A, lora_B) per slot

    def __deepcopy__(self, memo: dict) -> FactorBank:
        """Copy the bank into ordinary tensors (a memory map cannot be copied) and point the copied parameters at it.

        ``nn.Parameter.__deepcopy__`` clones each parameter's data, so without the
        repointing the copies would hold the factors a second time.
        """
        bank = FactorBank.__new__(FactorBank)
        memo[id(self)] = bank
        bank.names = list(self.names)
        bank.slots = dict(self.slots)
        bank.lora_A = copy.deepcopy(self.lora_A, memo)
        bank.lora_B_t = copy.deepcopy(self.lora_B_t, memo)
        bank._map_A = bank._map_B = None
        bank._parameters = copy.deepcopy(self._parameters, memo)
        for slot in range(len(bank.names)):
            bank._point(slot)
        return bank

    def __getstate__(self) -> dict:
        """Return the state to pickle (``torch.save`` of a model), without the memory maps."""
        return {**self.__dict__, "_map_A": None, "_map_B": None}

    @property
    def capacity(self) -> int:
        return self.lora_A.shape[0]

    def reserve(self, count: int) -> None:
        """Make room for ``count`` more members, growing the bank at most once.

        The reserved slots are backed by huge pages where the system offers them.
        """
        needed = len(self.names) + count
        if needed > self.capacity:
            self._resize(max(INITIAL_CAPACITY, needed, GROWTH * self.capacity))
        _use_huge_pages(self._map_A, self.lora_A, len(self.names), needed)
        _use_huge_pages(self._map_B, self.lora_B_t, len(self.names), needed)

    def add(self, name: str, lora_A: nn.Parameter, lora_B: nn.Parameter, values_A: torch.Tensor, values_B: torch.Tensor) -> None:
        """Copy ``values_A`` (``(r, in)``) and ``values_B`` (``(out, r)``) into a new slot and point the parameters at it."""
        if len(self.names) == self.capacity:
            self.reserve(1)
        slot = len(self.names)
        self.lora_A[slot].copy_(values_A.detach())
        self.lora_B_t[slot].copy_(values_B.detach().T)
        self.names.append(name)
        self.slots[name] = slot
        self._parameters.append((lora_A, lora_B))
        self._point(slot)

    def remove(self, name: str) -> None:
        """Give ``name``'s parameters their own copy, and fill its slot with the last member."""
        slot, last = self.slots.pop(name), len(self.names) - 1
        lora_A, lora_B = self._parameters[slot]
        lora_A.data = lora_A.detach().clone()
        lora_B.data = lora_B.detach().clone(memory_format=torch.contiguous_format)
        if slot != last:
            self.lora_A[slot].copy_(self.lora_A[last])
            self.lora_B_t[slot].copy_(self.lora_B_t[last])
            self.names[slot] = self.names[last]
            self.slots[self.names[slot]] = slot
            self._parameters[slot] = self._parameters[last]
            self._point(slot)
        self.names.pop()
        self._parameters.pop()
        _release_pages(self._map_A, self.lora_A, last)
        _release_pages(self._map_B, self.lora_B_t, last)
        if self.names and len(self.names) <= self.capacity // 4:
            self._resize(max(INITIAL_CAPACITY, self.capacity // 2))

    def is_current(self, name: str) -> bool:
        """Tell whether ``name``'s parameters are still views of its slot.

        ``module.to()`` or an assignment to ``.data`` from outside gives a parameter new
        storage, and the bank is then out of date for it.
        """
        slot = self.slots.get(name)
        if slot is None:
            return False
        lora_A, lora_B = self._parameters[slot]
        return _same_view(lora_A, self.lora_A[slot]) and _same_view(lora_B, self.lora_B_t[slot].T)

    def _resize(self, capacity: int) -> None:
        if capacity == self.capacity:
            return
        count = len(self.names)
        lora_A, map_A = _allocate((capacity, *self.lora_A.shape[1:]), self.lora_A.dtype, self.lora_A.device)
        lora_B_t, map_B = _allocate((capacity, *self.lora_B_t.shape[1:]), self.lora_B_t.dtype, self.lora_B_t.device)
        _use_huge_pages(map_A, lora_A, 0, count)
        _use_huge_pages(map_B, lora_B_t, 0, count)
        lora_A[:count].copy_(self.lora_A[:count])
        lora_B_t[:count].copy_(self.lora_B_t[:count])
        self.lora_A, self.lora_B_t, self._map_A, self._map_B = lora_A, lora_B_t, map_A, map_B
        for slot in range(count):
            self._point(slot)

    def _point(self, slot: int) -> None:
        lora_A, lora_B = self._parameters[slot]
        lora_A.data = self.lora_A[slot]
        lora_B.data = self.lora_B_t[slot].T


def _allocate(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, mmap.mmap | None]:
    """Return an uninitialised tensor, and on the CPU the anonymous memory map that contains it.

    The tensor keeps the map alive, and the map is unmapped when the tensor is freed.
    """
    count = math.prod(shape)
    if torch.device(device).type != "cpu" or count == 0:
        return torch.empty(shape, dtype=dtype, device=device), None
    if hasattr(mmap, "MAP_PRIVATE"):  # private, so that MADV_DONTNEED frees pages (the default map is shared)
        memory = mmap.mmap(-1, count * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        memory = mmap.mmap(-1, count * dtype.itemsize)
    return torch.frombuffer(memory, dtype=dtype, count=count).view(shape), memory


def _use_huge_pages(memory: mmap.mmap | None, bank: torch.Tensor, start: int, stop: int) -> None:
    """Ask for huge pages over the whole huge pages inside slots ``start`` to ``stop - 1``.

    Does nothing where the system has no transparent huge pages.
    """
    huge = _huge_page_size()
    if memory is None or not huge or not hasattr(mmap, "MADV_HUGEPAGE") or stop <= start:
        return
    slot_bytes = _slot_bytes(bank)
    address = bank.data_ptr()  # the start of the map
    first = -(-(address + start * slot_bytes) // huge) * huge - address  # rounded up to a huge page
    last = (address + stop * slot_bytes) // huge * huge - address  # rounded down
    if last > first:
        memory.madvise(mmap.MADV_HUGEPAGE, first, last - first)


@functools.cache
def _huge_page_size() -> int:
    """Return the transparent huge page size in bytes, or 0 where they are off or unknown."""
    root = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        if "[never]" in (root / "enabled").read_text():
            return 0
        return int((root / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 0


def _release_pages(memory: mmap.mmap | None, bank: torch.Tensor, slot: int) -> None:
    """Give the whole pages of slot ``slot`` and the slots after it back to the system; they read as zeros."""
    if memory is None or not hasattr(memory, "madvise"):
        return
    slot_bytes = _slot_bytes(bank)
    start = -(-slot * slot_bytes // mmap.PAGESIZE) * mmap.PAGESIZE  # rounded up to a page
    if start < len(memory):
        memory.madvise(mmap.MADV_DONTNEED, start, len(memory) - start)


def _slot_bytes(bank: torch.Tensor) -> int:
    return bank[0].numel() * bank.element_size()


def _same_view(parameter: torch.Tensor, view: torch.Tensor) -> bool:
    return (
        parameter.data_ptr() == view.data_ptr()
        and parameter.shape == view.shape
        and parameter.stride() == view.stride()
        and parameter.dtype == view.dtype
        and parameter.device == view.device
    )
