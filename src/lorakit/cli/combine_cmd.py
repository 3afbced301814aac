"""``lorakit combine``: build a new adapter from several, with a method from the registry."""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lorakit.combine.registry import METHODS, method_names

# Choice types built from the registry, so --help and click's error list the real names.
MethodName = enum.Enum("MethodName", {name: name for name in method_names()}, type=str)
StoredDtype = enum.Enum("StoredDtype", {name: name for name in ("float32", "float16", "bfloat16")}, type=str)
MajoritySign = enum.Enum("MajoritySign", {name: name for name in ("total", "frequency")}, type=str)
_SHOWN_MODULES = 10


def parse_weights(text: str) -> list[float]:
    """Parse ``--weights`` (``0.7,0.3``) into floats, as typed by the user."""
    weights = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise typer.BadParameter(f"{item.strip()!r} is not a number (expected e.g. 0.7,0.3).", param_hint="--weights") from None
        if not math.isfinite(value):
            raise typer.BadParameter(f"{item.strip()!r} is not a finite number.", param_hint="--weights")
        weights.append(value)
    return weights


def _list_methods(value: bool) -> None:
    if not value:
        return
    for method in METHODS.values():
        options = ", ".join(
            f"--{option.replace('_', '-')}{' (required)' if option in method.required else ''}"
            for option in sorted(method.options)
        )
        typer.echo(f"{method.name}: {method.summary}\n    options: {options}\n    reference: {method.reference}")
    raise typer.Exit()


def combine(
    adapters: Annotated[list[Path], typer.Argument(help="Adapter folders to combine.", show_default=False)],
    weights: Annotated[str, typer.Option("--weights", help="One weight per adapter, comma-separated, e.g. 0.7,0.3 or -1,1.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the combined adapter to.", show_default=False)],
    method: Annotated[MethodName, typer.Option("--method", help="Combine method; --list-methods describes each.")] = MethodName.linear,
    rank: Annotated[int | None, typer.Option("--rank", min=1, help="Rank of the result. linear keeps the exact sum (the ranks added up) unless this is set; the other methods default to the largest input rank.")] = None,
    density: Annotated[float | None, typer.Option("--density", help="Fraction of delta entries kept, in (0, 1]; required by ties, dare_* and magnitude_prune, and rejected by the other methods.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of DARE's random pruning (default: a random one, recorded).")] = None,
    majority_sign: Annotated[MajoritySign | None, typer.Option("--majority-sign", help="TIES sign election (default: total).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Base model (folder, .gguf file, hub name, minilm or smollm2); needed only for module copies whose weights do not sum to 1.")] = None,
    dtype: Annotated[StoredDtype | None, typer.Option("--dtype", help="Dtype to store the result in (default: the inputs').")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output folder if it exists.")] = False,
    allow_different_bases: Annotated[bool, typer.Option("--allow-different-bases", help="Accept adapters whose configs name different base models.")] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow adapter_model.bin pickle files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the combine report as JSON.")] = False,
    list_methods: Annotated[bool, typer.Option("--list-methods", callback=_list_methods, is_eager=True, help="List the combine methods and exit.")] = False,
) -> None:
    """Combine adapters into one new adapter folder (PEFT format) with a lorakit_combine.json record."""
    import torch

    from lorakit.combine.folders import combine_folders

    target, report = combine_folders(
        adapters, parse_weights(weights), output, method.value, rank=rank, density=density, seed=seed,
        majority_sign=majority_sign.value if majority_sign else None, model=model,
        dtype=getattr(torch, dtype.value) if dtype else None,
        overwrite=overwrite, trust_pickle=trust_pickle, allow_different_bases=allow_different_bases,
    )
    if as_json:
        typer.echo(json.dumps({"output": str(target), **report.to_dict()}, indent=2))
        return
    _print_report(target, report)


def _print_report(target: Path, report) -> None:
    ranks = sorted({m.rank for m in report.modules.values()})
    rank_text = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    typer.echo(
        f"Wrote {target} with method {report.method}: {len(report.modules)} modules, rank {rank_text}, "
        f"max relative error {report.max_relative_error:.3g}, {len(report.module_copies)} module copies, "
        f"{report.seconds:.2f} s."
    )
    worst = sorted(report.modules.items(), key=lambda item: -item[1].relative_error)[:_SHOWN_MODULES]
    if worst and worst[0][1].relative_error > 0:
        table = Table(title=f"largest relative errors (of {len(report.modules)} modules)", title_justify="left")
        for column in ("module", "input ranks", "rank", "relative error"):
            table.add_column(column)
        for path, module in worst:
            inputs = ", ".join("-" if r is None else str(r) for r in module.input_ranks)
            table.add_row(path, inputs, str(module.rank), f"{module.relative_error:.4g}")
        Console().print(table)
