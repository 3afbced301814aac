"""``lorakit merge``: fold adapters into a base model and write a transformers folder."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from lorakit.errors import MergeError

LoadDtype = enum.Enum("LoadDtype", {name: name for name in ("auto", "float32", "float16", "bfloat16")}, type=str)


def merge(
    model: Annotated[str, typer.Option("--model", help="Base model: a folder, a .gguf file, a hub name, or the packaged minilm / smollm2.", show_default=False)],
    adapter: Annotated[list[str], typer.Option("--adapter", help="NAME=PATH[:WEIGHT] of an adapter to merge (repeatable; weight 1 by default).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the merged model to.", show_default=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output folder if it exists.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Merge into a quantized base by dequantizing it; the measured output difference is reported.")] = False,
    max_shard_size: Annotated[str, typer.Option("--max-shard-size", help="Largest safetensors shard, e.g. 5GB or 500MB.")] = "5GB",
    dtype: Annotated[LoadDtype, typer.Option("--dtype", help="Dtype to load and store the model in; auto keeps the checkpoint's.")] = LoadDtype.auto,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow adapter_model.bin pickle files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the merge report as JSON.")] = False,
) -> None:
    """Merge adapters into the base model's weights (exact weighted sum) and save the full model."""
    from lorakit.merge.folder import AdapterSpec, merge_to_folder

    try:
        specs = [AdapterSpec.parse(text) for text in adapter]
    except MergeError as err:
        raise typer.BadParameter(str(err), param_hint="--adapter") from err
    report = merge_to_folder(
        model, specs, output, overwrite=overwrite, force=force, max_shard_size=max_shard_size, dtype=dtype.value,
        trust_pickle=trust_pickle,
    )
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    message = (
        f"Wrote {report.output}: {len(report.adapters)} adapters merged into {report.lora_modules} modules "
        f"and {report.module_copies} module copies, {report.dtype}, {len(report.files)} files, {report.seconds:.1f} s."
    )
    if report.measured_difference is not None:
        difference = report.measured_difference
        message += (
            f" The base was quantized ({report.quantization}); max |output difference| against the unmerged "
            f"quantized model: {difference['max_abs']:.3g} (relative {difference['relative']:.3g})."
        )
    typer.echo(message)
