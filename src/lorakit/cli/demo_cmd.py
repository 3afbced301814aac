"""``lorakit demo``: train two sentiment adapters on the packaged data and compare how they combine."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lorakit.demo.settings import DEFAULT_OUTPUT, MODELS
from lorakit.logging_setup import configure_logging


class ModelChoice(str, enum.Enum):
    minilm = "minilm"
    smollm2 = "smollm2"


class SizeChoice(str, enum.Enum):
    tiny = "tiny"
    small = "small"
    full = "full"


def _size_help() -> str:
    parts = []
    for size in SizeChoice:
        rows = {name: model.sizes[size.value] for name, model in MODELS.items()}
        counts = ", ".join(f"{r.train_rows}/{r.test_rows} with {name}" for name, r in rows.items())
        parts.append(f"{size.value} ({counts})")
    return (
        "Training/test rows per domain: " + "; ".join(parts) + ". "
        "small, the default, took 2 minutes with minilm on an idle 2-core machine; tiny is for quick checks."
    )


def demo(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the data, adapters, report.md, metrics.json and accuracy.png; created if missing.")] = Path(DEFAULT_OUTPUT),
    model: Annotated[ModelChoice, typer.Option("--model", help="Base model: minilm (packaged all-MiniLM-L6-v2, a BERT encoder) or smollm2 (packaged SmolLM2-135M-Instruct, a LLaMA decoder used as a sequence classifier).")] = ModelChoice.minilm,
    size: Annotated[SizeChoice, typer.Option("--size", help=_size_help())] = SizeChoice.small,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train the adapters again even if the output folder contains ones trained with the same settings.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the row draw, the classifier head's initialisation and training.")] = 42,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars. The table is still printed.")] = False,
) -> None:
    """Train a movie-review and a tweet sentiment adapter on one base model, offline, then compare them.

    The base model, each adapter alone, a weighted stack, a linear and
    a TIES combination, and a routed mixed batch are scored on held-out
    rows of both domains. Prints a table and writes report.md,
    accuracy.png, metrics.json and the adapters to --output.
    """
    from lorakit.demo import DemoSettings, run_demo
    from lorakit.demo.report import REPORT_NAME, results_table

    if quiet:
        configure_logging(quiet=True)
    quiet = quiet or bool(ctx.find_root().params.get("quiet"))
    settings = DemoSettings(model=model.value, size=size.value, seed=seed)
    result = run_demo(output, settings, retrain=retrain, quiet=quiet)
    console = Console()
    console.print(results_table(result))
    console.print(f"Report: {result.output / REPORT_NAME}")
