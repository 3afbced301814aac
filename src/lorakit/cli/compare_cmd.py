"""``lorakit compare``: how similar adapters are, to choose between linear and TIES combination."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def compare(
    adapters: Annotated[list[Path], typer.Argument(help="Adapter folders to compare (two or more).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print all figures as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save heatmaps to this PNG file.")] = None,
    signs: Annotated[bool, typer.Option("--signs/--no-signs", help="Count sign conflicts (builds each module's dense deltas).")] = True,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow adapter_model.bin pickle files.")] = False,
) -> None:
    """Compare adapters' deltas: norms, cosine similarity and sign conflicts, per module and overall.

    Cosine near 0 and sign conflicts near 0.5 mean unrelated changes; TIES' sign
    election only alters entries whose signs conflict, while linear keeps every change.
    """
    from lorakit.compare import compare_folders, plot_comparison

    comparison = compare_folders(adapters, signs=signs, trust_pickle=trust_pickle)
    if plot is not None:
        plot_comparison(comparison, plot)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
        return
    console = Console()
    console.print(_overall_table(comparison))
    console.print(_module_table(comparison))
    if plot is not None:
        console.print(f"Saved heatmaps to {plot}")


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _overall_table(comparison) -> Table:
    table = Table(title="all modules", title_justify="left")
    table.add_column("adapter")
    table.add_column("||delta||")
    for name in comparison.names:
        table.add_column(f"cos {name}")
    if comparison.sign_conflict is not None:
        for name in comparison.names:
            table.add_column(f"conflict {name}")
    for i, name in enumerate(comparison.names):
        row = [name, _number(comparison.norms[i])] + [_number(v) for v in comparison.cosine[i]]
        if comparison.sign_conflict is not None:
            row += [_number(v) for v in comparison.sign_conflict[i]]
        table.add_row(*row)
    return table


def _module_table(comparison) -> Table:
    pairs = list(combinations(range(len(comparison.names)), 2))
    table = Table(title="per module (cos / sign conflict per pair)", title_justify="left")
    table.add_column("module")
    for name in comparison.names:
        table.add_column(f"||{name}||")
    for i, j in pairs:
        table.add_column(f"{comparison.names[i]} ~ {comparison.names[j]}")
    for module in comparison.modules:
        row = [module.path] + [_number(n) for n in module.norms]
        for i, j in pairs:
            conflict = module.sign_conflict[i][j] if module.sign_conflict is not None else None
            row.append(f"{_number(module.cosine[i][j])} / {_number(conflict, 2)}")
        table.add_row(*row)
    return table
