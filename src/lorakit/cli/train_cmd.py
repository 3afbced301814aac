"""``lorakit train``: train a LoRA adapter on a dataset, optionally on top of frozen adapters.

Every option is a field of :class:`lorakit.train.TrainConfig` and shares its help.
Options given on the command line override the ``--config`` YAML file, which
overrides the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lorakit.train.config import DEFAULTS, FIELD_HELP

_DATA = "Data"
_ADAPTER = "Adapter"
_OPTIMISATION = "Optimisation"
_RUN = "Evaluation, checkpoints and output"
# torchrun's argument parser takes "--r" for an abbreviation of its own options and exits.
_LORA_R_NOTE = " Under torchrun, spell it --lora-r."


def _option(name: str, *flags: str, panel: str | None = None, note: str = "") -> Any:
    """Return a typer option for field ``name`` of :class:`TrainConfig`, with the field's help."""
    return typer.Option(
        *flags,
        help=FIELD_HELP[name] + note,
        rich_help_panel=panel,
        show_default=getattr(DEFAULTS, name) is not None,
    )


def train(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", help="YAML file of options (keys as the flags); flags override it.", show_default=False),
    ] = None,
    model: Annotated[Optional[str], _option("model")] = None,
    dataset: Annotated[Optional[str], _option("dataset")] = None,
    task: Annotated[Optional[str], _option("task")] = None,
    output: Annotated[Optional[str], _option("output")] = None,
    dataset_config_name: Annotated[Optional[str], _option("dataset_config_name", panel=_DATA)] = None,
    train_split: Annotated[str, _option("train_split", panel=_DATA)] = DEFAULTS.train_split,
    eval_split: Annotated[Optional[str], _option("eval_split", panel=_DATA)] = None,
    validation_size: Annotated[Optional[float], _option("validation_size", panel=_DATA)] = None,
    limit: Annotated[Optional[int], _option("limit", panel=_DATA)] = None,
    text_column: Annotated[Optional[str], _option("text_column", panel=_DATA)] = None,
    label_column: Annotated[Optional[str], _option("label_column", panel=_DATA)] = None,
    assistant_only_loss: Annotated[bool, _option("assistant_only_loss", "--assistant-only-loss/--full-loss", panel=_DATA)] = DEFAULTS.assistant_only_loss,
    max_length: Annotated[int, _option("max_length", panel=_DATA)] = DEFAULTS.max_length,
    r: Annotated[int, _option("r", "--r", "--lora-r", panel=_ADAPTER, note=_LORA_R_NOTE)] = DEFAULTS.r,
    lora_alpha: Annotated[float, _option("lora_alpha", panel=_ADAPTER)] = DEFAULTS.lora_alpha,
    lora_dropout: Annotated[float, _option("lora_dropout", panel=_ADAPTER)] = DEFAULTS.lora_dropout,
    target_modules: Annotated[Optional[str], _option("target_modules", panel=_ADAPTER)] = None,
    use_rslora: Annotated[bool, _option("use_rslora", "--use-rslora/--no-rslora", panel=_ADAPTER)] = DEFAULTS.use_rslora,
    stack: Annotated[Optional[list[str]], _option("stack", panel=_ADAPTER)] = None,
    adapter_name: Annotated[Optional[str], _option("adapter_name", panel=_ADAPTER)] = None,
    epochs: Annotated[float, _option("epochs", panel=_OPTIMISATION)] = DEFAULTS.epochs,
    max_steps: Annotated[Optional[int], _option("max_steps", panel=_OPTIMISATION)] = None,
    learning_rate: Annotated[float, _option("learning_rate", panel=_OPTIMISATION)] = DEFAULTS.learning_rate,
    batch_size: Annotated[int, _option("batch_size", panel=_OPTIMISATION)] = DEFAULTS.batch_size,
    gradient_accumulation: Annotated[int, _option("gradient_accumulation", panel=_OPTIMISATION)] = DEFAULTS.gradient_accumulation,
    seed: Annotated[int, _option("seed", panel=_OPTIMISATION)] = DEFAULTS.seed,
    eval_steps: Annotated[Optional[float], _option("eval_steps", panel=_RUN)] = None,
    logging_steps: Annotated[Optional[float], _option("logging_steps", panel=_RUN)] = None,
    save_steps: Annotated[Optional[int], _option("save_steps", panel=_RUN)] = None,
    save_total_limit: Annotated[Optional[int], _option("save_total_limit", panel=_RUN)] = None,
    resume: Annotated[bool, _option("resume", "--resume", panel=_RUN)] = False,
    overwrite: Annotated[bool, _option("overwrite", "--overwrite", panel=_RUN)] = False,
    quiet: Annotated[bool, _option("quiet", "--quiet", "-q", panel=_RUN)] = False,
) -> None:
    """Train a LoRA adapter on a dataset (seq-cls or causal-lm) and write it as a PEFT folder.

    Runs unchanged under torchrun for data-parallel training.
    """
    from lorakit.logging_setup import configure_logging
    from lorakit.train import load_config
    from lorakit.train import train as run_training

    overrides = _command_line_values(ctx)
    if quiet:
        configure_logging(quiet=True)
    settings = load_config(config, overrides)
    result = run_training(settings)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(_summary_line(result.output_dir, result.metrics))


def _command_line_values(ctx: typer.Context) -> dict[str, Any]:
    """Return the options the user typed (not their defaults), keyed by field name."""
    values = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        # Compared by name: typer ships its own copy of click, whose enum is not click's.
        if name != "config" and source is not None and source.name == "COMMANDLINE":
            values[name] = value
    return values


def _summary_line(output: Path, metrics: dict[str, Any]) -> str:
    final = metrics.get("final_eval") or {}
    initial = metrics.get("initial_eval") or {}
    parts = []
    for key in ("eval_accuracy", "eval_f1_macro", "eval_loss", "eval_perplexity"):
        if key in final and final[key] is not None:
            before = initial.get(key)
            change = f" (before training {before:.4g})" if before is not None else ""
            parts.append(f"{key.removeprefix('eval_')} {final[key]:.4g}{change}")
    results = "; ".join(parts) if parts else "no evaluation rows"
    return f"Adapter written to {output}: {results}"
