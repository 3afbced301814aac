"""Combining adapter folders into a new PEFT folder with its ``lorakit_combine.json``."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lorakit.adapters.io import read_adapter, write_adapter
from lorakit.adapters.model import Adapter
from lorakit.combine.api import CombineReport, combine_adapters, relative_errors_summary
from lorakit.combine.record import build_record, write_record
from lorakit.errors import OutputExistsError
from lorakit.publish import publish_folder

logger = logging.getLogger(__name__)


def combine_folders(
    paths: Sequence[str | os.PathLike],
    weights: Sequence[float],
    output: str | os.PathLike,
    method: str = "linear",
    *,
    rank: int | None = None,
    density: float | None = None,
    seed: int | None = None,
    majority_sign: str | None = None,
    model: str | nn.Module | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
    allow_different_bases: bool = False,
) -> tuple[Path, CombineReport]:
    """Read adapter folders, combine them and write the result with its record, atomically.

    Args:
        paths: The adapter folders.
        weights: One weight per folder.
        output: The folder to write; it must not exist unless ``overwrite``.
        method: The combine method (see :func:`lorakit.combine.api.combine_adapters`
            for it and the options that follow).
        model: The base model (a loaded module, or a name or path to load), needed
            only for module copies whose weights do not sum to 1.
        overwrite: Replace an existing ``output`` folder.
        trust_pickle: Allow adapters stored as pickle (``adapter_model.bin``).

    Returns:
        The output folder and the combine report.

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is false (checked first).
        CombineError, AdapterFormatError, AdapterMismatchError: As the steps raise them.
    """
    target = Path(output).expanduser()
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"Output folder {str(target)!r} already exists; choose another path or pass overwrite=True (--overwrite)."
        )
    adapters = [read_adapter(path, trust_pickle=trust_pickle) for path in paths]
    base_model = model
    if isinstance(model, (str, os.PathLike)):
        from lorakit.merge.loading import load_base_model

        base_model = load_base_model(str(model), adapters)
    combined, report = combine_adapters(
        adapters, weights, method, rank=rank, density=density, seed=seed, majority_sign=majority_sign,
        base_model=base_model, dtype=dtype, name=target.name, allow_different_bases=allow_different_bases,
    )
    _write_with_record(combined, build_record(report, adapters), target)
    logger.debug("Wrote %s (%s): %s", target, report.method, relative_errors_summary(report))
    return target, report


def _write_with_record(adapter: Adapter, record: dict, target: Path) -> None:
    """Write the adapter and its record into a staging folder beside ``target``, then move it there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder = write_adapter(adapter, staging / "adapter")
        write_record(folder, record)
        publish_folder(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
