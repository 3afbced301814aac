"""What a training run writes beside the adapter: metrics.json, a loss plot, a model card and its settings."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorakit.train.config import TrainConfig

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
PLOT_NAME = "loss.png"
CARD_NAME = "README.md"
SETTINGS_NAME = "training_config.yaml"
OUTPUT_NAMES = (METRICS_NAME, PLOT_NAME, CARD_NAME, SETTINGS_NAME)


@dataclass
class RunSummary:
    """The facts about a finished run that the report files show."""

    config: TrainConfig
    model_path: str
    adapter_name: str
    data_description: str
    train_rows: int
    eval_rows: int
    target_modules: list[str]
    trainable_parameters: int
    total_parameters: int
    label_names: list[str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_metrics: dict[str, Any] = field(default_factory=dict)
    initial_eval: dict[str, Any] | None = None
    final_eval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the contents of ``metrics.json``."""
        return {
            "adapter_name": self.adapter_name,
            "task": self.config.task,
            "base_model": self.model_path,
            "dataset": self.config.dataset,
            "data": self.data_description,
            "train_rows": self.train_rows,
            "eval_rows": self.eval_rows,
            "labels": self.label_names,
            "target_modules": self.target_modules,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "stack": self.config.stack,
            "train": self.train_metrics,
            "initial_eval": self.initial_eval,
            "final_eval": self.final_eval,
            "history": self.history,
        }


def write_settings(folder: Path, config: TrainConfig) -> Path:
    """Write the run's resolved settings as YAML; ``--config`` reads the file back."""
    path = folder / SETTINGS_NAME
    settings = {key.replace("_", "-"): value for key, value in config.to_dict().items()}
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


def write_metrics(folder: Path, summary: RunSummary) -> Path:
    """Write ``metrics.json`` (non-finite numbers become ``null``, which JSON has no other way to hold)."""
    path = folder / METRICS_NAME
    path.write_text(json.dumps(_finite(summary.to_dict()), indent=2) + "\n", encoding="utf-8")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def plot_losses(folder: Path, summary: RunSummary) -> Path:
    """Save ``loss.png``: training and evaluation loss by step, and the task's evaluation metric beside them."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede importing pyplot
    import matplotlib.pyplot as plt

    metric = "eval_accuracy" if summary.config.task == "seq-cls" else "eval_perplexity"
    has_metric = any(metric in entry for entry in summary.history)
    figure, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(10 if has_metric else 6, 4), squeeze=False)
    loss_axis = axes[0][0]
    _plot_series(loss_axis, summary.history, "loss", "training loss")
    _plot_series(loss_axis, summary.history, "eval_loss", "evaluation loss", marker="o")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title(f"{summary.adapter_name}: loss")
    loss_axis.legend()
    if has_metric:
        metric_axis = axes[0][1]
        _plot_series(metric_axis, summary.history, metric, metric.removeprefix("eval_"), marker="o")
        metric_axis.set_xlabel("optimizer step")
        metric_axis.set_title(f"evaluation {metric.removeprefix('eval_')}")
        metric_axis.legend()
    figure.tight_layout()
    path = folder / PLOT_NAME
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plot_series(axis: Any, history: list[dict[str, Any]], key: str, label: str, marker: str = "") -> None:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    if points:
        steps, values = zip(*points)
        axis.plot(steps, values, marker=marker, label=label)


def write_model_card(folder: Path, summary: RunSummary) -> Path:
    """Write a short ``README.md``: what was trained on what, the results, and how to load it."""
    config = summary.config
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {summary.model_path}",
        "tags: [lora, lorakit, " + ("text-classification" if config.task == "seq-cls" else "text-generation") + "]",
        "---",
        "",
        f"# {summary.adapter_name}",
        "",
        f"A LoRA adapter ({config.task}) for `{summary.model_path}`, trained with lorakit on `{config.dataset}` "
        f"({summary.data_description}).",
        "",
        "## Training",
        "",
        f"- LoRA: r={config.r}, lora_alpha={config.lora_alpha:g}, lora_dropout={config.lora_dropout:g}, "
        f"rsLoRA {'on' if config.use_rslora else 'off'}; target modules: {', '.join(summary.target_modules)}",
        f"- Trainable parameters: {summary.trainable_parameters:,} of {summary.total_parameters:,}",
        f"- Optimizer steps: {summary.train_metrics.get('global_step', '?')}, learning rate {config.learning_rate:g}, "
        f"batch size {config.batch_size} x {config.gradient_accumulation} accumulation, "
        f"max length {config.max_length}, seed {config.seed}",
    ]
    lines += _stack_section(config) + _results_section(summary) + _labels_section(summary) + _usage_section(summary)
    path = folder / CARD_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _stack_section(config: TrainConfig) -> list[str]:
    entries = config.stack_entries()
    if not entries:
        return []
    lines = ["", "## Stack", "", "This adapter was trained on top of these frozen adapters. It reproduces the training-time "
             "model only when loaded with them at the same weights:", ""]
    lines += [f"- `{entry.name}` = `{entry.path}`, weight {entry.weight:g}" for entry in entries]
    return lines


def _results_section(summary: RunSummary) -> list[str]:
    if not summary.final_eval:
        return ["", "## Results", "", "No evaluation rows were used (--validation-size 0)."]
    lines = ["", "## Results", "", f"On {summary.eval_rows} held-out rows:", "",
             "| metric | before training | after training |", "|---|---|---|"]
    initial = summary.initial_eval or {}
    for key, value in summary.final_eval.items():
        if not key.startswith("eval_") or key.endswith(("runtime", "per_second", "steps_per_second")):
            continue
        before = initial.get(key)
        lines.append(f"| {key.removeprefix('eval_')} | {_number(before)} | {_number(value)} |")
    lines += ["", f"Loss curves: [{PLOT_NAME}]({PLOT_NAME}); all numbers: [{METRICS_NAME}]({METRICS_NAME})."]
    return lines


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _labels_section(summary: RunSummary) -> list[str]:
    if not summary.label_names:
        return []
    labels = ", ".join(f"{index} = {name}" for index, name in enumerate(summary.label_names))
    return ["", "## Labels", "", f"{labels} (stored as `id2label` in `labels.json`)."]


def _usage_section(summary: RunSummary) -> list[str]:
    config = summary.config
    auto_class = "AutoModelForSequenceClassification" if config.task == "seq-cls" else "AutoModelForCausalLM"
    num_labels = f", num_labels={len(summary.label_names)}" if summary.label_names else ""
    lines = ["", "## Use", "", "```python", f"from transformers import {auto_class}"]
    base = f'base = {auto_class}.from_pretrained("{summary.model_path}"{num_labels})'
    entries = config.stack_entries()
    if not entries:
        lines += ["from peft import PeftModel", "", base, f'model = PeftModel.from_pretrained(base, "{config.output}")']
        return lines + ["```"]
    weights = {entry.name: entry.weight for entry in entries}
    weights[summary.adapter_name] = 1.0
    lines += ["from lorakit import MultiAdapterModel", "", base, "runtime = MultiAdapterModel(base)"]
    lines += [f'runtime.load_adapter("{entry.path}", "{entry.name}")' for entry in entries]
    lines += [f'runtime.load_adapter("{config.output}", "{summary.adapter_name}")', f"runtime.activate({weights!r})"]
    return lines + ["```"]
