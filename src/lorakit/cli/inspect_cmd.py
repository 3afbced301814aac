"""``lorakit inspect``: what an adapter folder holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Adapter folders to describe.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per adapter (a JSON list).")] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow adapter_model.bin pickle files.")] = False,
) -> None:
    """Describe adapters: base model, task, targets, ranks, alpha, scaling, size and dtype."""
    from lorakit.adapters.summary import summarize_adapter

    summaries = [summarize_adapter(path, trust_pickle=trust_pickle) for path in paths]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
        return
    console = Console()
    for summary in summaries:
        console.print(_table(summary))


def _table(summary: dict) -> Table:
    table = Table(title=f"{summary['name']}  ({summary['path']})", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    rank = summary["rank"]
    per_module = rank["per_module"]
    rank_text = f"{rank['r']}" + (f" (except: {_pairs(per_module)})" if per_module else "")
    scaling = summary["scaling"]
    scaling_text = f"{summary['scaling_rule']} = {scaling.get('common')}"
    if scaling.get("per_module"):
        scaling_text += f" (except: {_pairs(scaling['per_module'])})"
    rows = [
        ("base model", summary["base_model"] or "(not recorded)"),
        ("task type", summary["task_type"] or "(none)"),
        ("targets", f"{', '.join(summary['target_modules']['modules'])} ({summary['num_modules']} modules)"),
        ("rank", rank_text),
        ("lora_alpha", str(summary["lora_alpha"])),
        ("scaling", scaling_text),
        ("lora_bias", str(summary["lora_bias"])),
        ("parameters", f"{summary['trainable_parameters']:,}"),
        ("file size", _size(summary["file_size_bytes"])),
        ("modules_to_save", ", ".join(summary["modules_to_save"]) or "(none)"),
        ("dtype", summary["dtype"]),
    ]
    if summary.get("labels"):
        rows.append(("labels", ", ".join(f"{k}: {v}" for k, v in summary["labels"].items())))
    for field, value in rows:
        table.add_row(field, value)
    return table


def _pairs(mapping: dict) -> str:
    items = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in mapping.items()]
    return ", ".join(items[:4]) + (f", and {len(items) - 4} more" if len(items) > 4 else "")


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
