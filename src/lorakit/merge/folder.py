"""Merging adapters into a base model and writing it as a transformers folder."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lorakit.adapters.io import read_adapter
from lorakit.adapters.model import Adapter
from lorakit.adapters.validate import validate_adapter
from lorakit.publish import publish_folder
from lorakit.combine.record import describe_input
from lorakit.errors import MergeError, OutputExistsError
from lorakit.merge.folding import FoldReport, fold_adapters
from lorakit.merge.loading import load_base_model, load_tokenizer
from lorakit.merge.quantized import (
    MeasuredDifference,
    dequantize_in_place,
    probe_outputs,
    quantization_method,
    unmerged_adapters,
)

logger = logging.getLogger(__name__)

RECORD_NAME = "lorakit_merge.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter to merge: an optional name, its folder and its weight."""

    name: str | None
    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> AdapterSpec:
        """Parse ``NAME=PATH[:WEIGHT]`` or ``PATH[:WEIGHT]`` (a ``:`` tail that is not a number stays in the path).

        Raises:
            MergeError: The path is empty or the weight is not finite.
        """
        name, equals, rest = text.partition("=")
        if not equals:
            name, rest = "", text
        path, weight = rest, 1.0
        head, colon, tail = rest.rpartition(":")
        if colon and head:
            try:
                weight, path = float(tail), head
            except ValueError:
                pass  # a path that contains ':' and has no weight
        if not path or not math.isfinite(weight):
            raise MergeError(
                f"Invalid adapter {text!r}: expected NAME=PATH[:WEIGHT] with a finite weight, e.g. sst=out/sst:0.5."
            )
        return cls(name or None, path, weight)


@dataclass
class MergeReport:
    """The summary of one merge: inputs, output files and changed modules."""

    output: str
    model: str
    adapters: list[dict[str, Any]]
    dtype: str
    lora_modules: int
    module_copies: int
    quantization: str | None = None
    measured_difference: dict[str, float] | None = None
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


def merge_to_folder(
    model: str,
    adapters: Sequence[AdapterSpec | str],
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    force: bool = False,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    dtype: str = "auto",
    trust_pickle: bool = False,
) -> MergeReport:
    """Fold adapters into a base model and write it, with its tokenizer, as a transformers folder.

    The weights become ``W + sum_i w_i * delta_i`` (computed in float32, stored in the
    model's dtype) one tensor at a time, so the peak memory stays near one copy of the
    model. The folder contains sharded safetensors, the configs, the tokenizer and a
    ``lorakit_merge.json`` record. It appears only when complete.

    Args:
        model: The base model: a folder, a ``.gguf`` file, a hub name, or ``minilm``/``smollm2``.
        adapters: :class:`AdapterSpec` values or ``NAME=PATH[:WEIGHT]`` strings.
        output: The folder to write; it must not exist unless ``overwrite``.
        overwrite: Replace an existing ``output``.
        force: Merge into a quantized base by dequantizing it; the result is written
            unquantized and the measured output difference is reported.
        max_shard_size: The largest safetensors shard, e.g. ``"5GB"``.
        dtype: The dtype to load and store the model in; ``"auto"`` keeps the checkpoint's.
        trust_pickle: Allow adapters stored as pickle (``adapter_model.bin``).

    Raises:
        OutputExistsError: ``output`` exists and ``overwrite`` is false (checked first).
        MergeError: A quantized base without ``force``, or a non-finite result.
        AdapterMismatchError: An adapter does not fit the base model.
    """
    target = Path(output).expanduser()
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"Output folder {str(target)!r} already exists; choose another path or pass overwrite=True (--overwrite)."
        )
    specs = [spec if isinstance(spec, AdapterSpec) else AdapterSpec.parse(spec) for spec in adapters]
    if not specs:
        raise MergeError("No adapters given; pass at least one (--adapter NAME=PATH[:WEIGHT]).")
    loaded = [read_adapter(spec.path, name=spec.name, trust_pickle=trust_pickle) for spec in specs]
    weights = [spec.weight for spec in specs]
    started = time.perf_counter()
    base = load_base_model(model, loaded, dtype=dtype)
    quantization = quantization_method(base)
    if quantization is not None and not force:
        raise MergeError(_quantized_base_message(model, quantization, base))
    difference = None
    if quantization is not None:
        fold, difference = merge_quantized(base, loaded, weights)
    else:
        fold = fold_adapters(base, loaded, weights)
    report = MergeReport(
        output=str(target), model=model, adapters=_describe(loaded, weights), dtype=str(base.dtype).removeprefix("torch."),
        lora_modules=len(fold.lora_modules), module_copies=len(fold.module_copies), quantization=quantization,
        measured_difference=None if difference is None else {**asdict(difference), "relative": difference.relative},
    )
    report.files = _save(base, load_tokenizer(model), report, target, max_shard_size)
    report.seconds = time.perf_counter() - started
    return report


def _quantized_base_message(model: str, quantization: str, base: nn.Module) -> str:
    return (
        f"The base model {model!r} is quantized ({quantization}). A merged delta cannot be stored in its quantized "
        f"weights, so lorakit would merge into a dequantized copy and write it unquantized in {base.dtype} "
        "(a larger folder whose outputs differ slightly from the quantized model with the adapters unmerged). "
        "Pass force=True (--force) to do that; the measured output difference is then reported."
    )


def merge_quantized(
    model: nn.Module, adapters: Sequence[Adapter], weights: Sequence[float]
) -> tuple[FoldReport, MeasuredDifference | None]:
    """Dequantize ``model``, fold the adapters in, and measure the output difference it made, in place.

    The reference is the quantized model with the adapters applied unmerged (forward
    hooks); the difference is taken on a fixed probe input.

    Raises:
        MergeError: The model cannot be dequantized or a result is not finite.
    """
    for adapter in adapters:
        validate_adapter(adapter, model)
    with unmerged_adapters(model, adapters, weights):
        reference = probe_outputs(model)
    dequantize_in_place(model)
    fold = fold_adapters(model, adapters, weights)
    merged = probe_outputs(model)
    if reference is None or merged is None:
        logger.warning("Merged into a dequantized copy; the output difference could not be measured.")
        return fold, None
    difference = MeasuredDifference(
        max_abs=float((merged - reference).abs().max()), max_abs_reference=float(reference.abs().max())
    )
    logger.warning("Merged into a dequantized copy of the quantized base: %s.", difference.describe())
    return fold, difference


def _describe(adapters: Sequence[Adapter], weights: Sequence[float]) -> list[dict[str, Any]]:
    return [{**describe_input(adapter), "weight": weight} for adapter, weight in zip(adapters, weights)]


def _save(model: nn.Module, tokenizer, report: MergeReport, target: Path, max_shard_size: str | int) -> list[str]:
    """Write model, tokenizer and record into a staging folder beside ``target``, then move it there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        folder = staging / "model"
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        files = sorted(p.name for p in folder.iterdir()) + [RECORD_NAME]
        record = {**asdict(report), "files": files}
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        publish_folder(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Wrote the merged model to %s (%d files)", target, len(files))
    return files
