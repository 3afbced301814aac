"""Training settings: one dataclass whose fields carry their help, YAML loading and flag overrides.

The command line, a YAML file and the Python API share these fields. YAML keys are
the flag names with or without dashes (``learning-rate`` or ``learning_rate``);
values given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from lorakit.errors import TrainingConfigError

logger = logging.getLogger(__name__)

TASKS = ("seq-cls", "causal-lm")
ALL_LINEAR = "all-linear"
DEFAULT_VALIDATION_SIZE = 0.1


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    """Declare a field with its help text (shown by ``lorakit train --help``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class StackEntry:
    """A frozen adapter under the one being trained: its name, folder and weight in the stack."""

    name: str
    path: str
    weight: float = 1.0


@dataclass
class TrainConfig:
    """Everything a training run needs; see each field's help."""

    # What to train on.
    model: str | None = _option(None, "Required (here or in --config). Base model: a local folder, a hub name, or a packaged model (minilm, smollm2).")
    dataset: str | None = _option(
        None,
        "Required (here or in --config). Dataset: a local csv, tsv, json, jsonl, parquet or txt file (optionally .gz/.bz2/.xz), "
        "a folder written by save_to_disk, or a hub dataset name.",
    )
    task: str | None = _option(None, f"Required (here or in --config). What to train: {' or '.join(TASKS)}.")
    output: str | None = _option(None, "Required (here or in --config). Folder to write the adapter, metrics, loss plot and model card to.")

    # Data.
    dataset_config_name: str | None = _option(None, "Configuration (subset) name of a hub dataset.")
    train_split: str = _option("train", "Split to train on.")
    eval_split: str | None = _option(
        None, "Split to evaluate on. Default: the 'validation' split if there is one, else rows held out by --validation-size."
    )
    validation_size: float | None = _option(
        None,
        "Rows held out of the training split for evaluation: a fraction below 1, a row count from 1 up, "
        f"or 0 for no evaluation. Default: {DEFAULT_VALIDATION_SIZE} when there is no evaluation split.",
    )
    limit: int | None = _option(
        None, "Train on at most this many rows, a random sample drawn with --seed after the held-out rows are removed."
    )
    text_column: str | None = _option(
        None, "Column with the input text, or with chat messages for causal-lm. Default: found from common names."
    )
    label_column: str | None = _option(None, "Column with the class labels (seq-cls). Default: found from common names.")
    assistant_only_loss: bool = _option(False, "causal-lm on chat rows: compute the loss on assistant messages only.")
    max_length: int = _option(256, "Maximum tokens per row; longer rows are truncated.")

    # The adapter.
    r: int = _option(8, "LoRA rank r.")
    lora_alpha: float = _option(16.0, "LoRA alpha; the scaling is lora_alpha / r (lora_alpha / sqrt(r) with rsLoRA).")
    lora_dropout: float = _option(0.05, "Dropout on the LoRA input during training.")
    target_modules: list[str] | None = _option(
        None,
        "Modules to adapt, by name or name suffix (e.g. q_proj,v_proj), or all-linear. "
        "Default: the attention projections of the model.",
    )
    use_rslora: bool = _option(False, "Use rank-stabilised LoRA (scaling lora_alpha / sqrt(r)).")
    stack: list[str] = _option(
        [],
        "A frozen adapter to train on top of, as NAME=PATH or NAME=PATH:WEIGHT (repeatable). "
        "The new adapter is exact on top of this weighted stack.",
    )
    adapter_name: str | None = _option(
        None, "Name of the new adapter inside the stack. Default: the output folder's name."
    )

    # Optimisation.
    epochs: float = _option(3.0, "Number of passes over the training rows.")
    max_steps: int | None = _option(None, "Stop after this many optimizer steps; overrides --epochs.")
    learning_rate: float = _option(2e-4, "Peak learning rate (AdamW with linear decay).")
    batch_size: int = _option(8, "Rows per batch on each process.")
    gradient_accumulation: int = _option(1, "Batches whose gradients are summed before each optimizer step.")
    seed: int = _option(42, "Random seed for the adapter init, the data order, dropout and the held-out split.")

    # Evaluation, logging and checkpoints.
    eval_steps: float | None = _option(
        None, "Evaluate every N optimizer steps (a value below 1 is a fraction of the run). Default: 5 times per run."
    )
    logging_steps: float | None = _option(
        None, "Record the training loss every N optimizer steps (below 1: a fraction of the run). Default: 20 times per run."
    )
    save_steps: int | None = _option(None, "Write a checkpoint every N optimizer steps, for --resume.")
    save_total_limit: int | None = _option(None, "Keep only the newest N checkpoints (by default every checkpoint is kept).")
    resume: bool = _option(False, "Resume from the last checkpoint in the output folder.")
    overwrite: bool = _option(False, "Replace an adapter that the output folder already holds.")
    quiet: bool = _option(False, "No progress bars.")

    def stack_entries(self) -> list[StackEntry]:
        """Parse :attr:`stack` into entries (validated by :meth:`validate`)."""
        return [parse_stack_entry(spec) for spec in self.stack]

    def resolved_adapter_name(self) -> str:
        """Return the name of the new adapter: :attr:`adapter_name`, else the output folder's name."""
        return self.adapter_name or Path(self.output or "adapter").expanduser().resolve().name

    def validate(self) -> None:
        """Check every field and raise one error that lists all problems found.

        Raises:
            TrainingConfigError: One or more settings are missing or out of range.
        """
        problems = _missing_required(self) + _range_problems(self) + _stack_problems(self)
        if problems:
            raise TrainingConfigError("Invalid training settings:\n  - " + "\n  - ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain values, keyed by field name (as written to the run record)."""
        return dataclasses.asdict(self)


FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
DEFAULTS = TrainConfig()


def parse_stack_entry(spec: str) -> StackEntry:
    """Parse ``NAME=PATH`` or ``NAME=PATH:WEIGHT``.

    The weight is taken from the text after the last ``:`` only when it is a number,
    so a path that contains ``:`` still works without a weight.

    Raises:
        TrainingConfigError: ``spec`` has no ``=``, an empty name or an empty path.
    """
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise TrainingConfigError(
            f"Invalid value for --stack: {spec!r} is not NAME=PATH or NAME=PATH:WEIGHT "
            "(for example --stack style=adapters/style:0.5)."
        )
    path, weight = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass
    return StackEntry(name=name.strip(), path=path.strip(), weight=weight)


def _missing_required(config: TrainConfig) -> list[str]:
    return [f"--{name} is required." for name in ("model", "dataset", "task", "output") if not getattr(config, name)]


def _range_problems(config: TrainConfig) -> list[str]:
    problems = []
    if config.task and config.task not in TASKS:
        problems.append(f"--task {config.task!r} is not one of {', '.join(TASKS)}.")
    positive_ints = ("r", "batch_size", "gradient_accumulation", "max_length", "max_steps", "limit", "save_steps",
                     "save_total_limit")
    for name in positive_ints:
        value = getattr(config, name)
        if value is not None and value < 1:
            problems.append(f"--{_flag(name)} must be at least 1, got {value}.")
    for name in ("lora_alpha", "learning_rate", "epochs", "eval_steps", "logging_steps"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            problems.append(f"--{_flag(name)} must be a positive number, got {value}.")
    if not 0 <= config.lora_dropout < 1:
        problems.append(f"--lora-dropout must be in [0, 1), got {config.lora_dropout}.")
    problems.extend(_validation_size_problems(config))
    if config.target_modules is not None:
        problems.extend(_target_module_problems(config.target_modules))
    if config.assistant_only_loss and config.task == "seq-cls":
        problems.append("--assistant-only-loss applies to --task causal-lm only.")
    return problems


def _validation_size_problems(config: TrainConfig) -> list[str]:
    size = config.validation_size
    if size is None:
        return []
    if config.eval_split:
        return ["--eval-split and --validation-size both choose evaluation rows; pass only one."]
    if not math.isfinite(size) or size < 0:
        return [f"--validation-size must be 0, a fraction below 1, or a row count, got {size}."]
    if size >= 1 and size != int(size):
        return [f"--validation-size {size} is neither a fraction below 1 nor a whole row count."]
    return []


def _target_module_problems(target_modules: list[str]) -> list[str]:
    if not target_modules or any(not name.strip() for name in target_modules):
        return [f"--target-modules {','.join(target_modules)!r} contains an empty name."]
    if ALL_LINEAR in target_modules and len(target_modules) > 1:
        return [f"--target-modules {ALL_LINEAR} cannot be combined with other names."]
    return []


def _stack_problems(config: TrainConfig) -> list[str]:
    problems = []
    names = set()
    for spec in config.stack:
        try:
            entry = parse_stack_entry(spec)
        except TrainingConfigError as err:
            problems.append(str(err))
            continue
        if entry.name in names:
            problems.append(f"--stack names {entry.name!r} twice; give each stacked adapter its own name.")
        names.add(entry.name)
        if not Path(entry.path).expanduser().is_dir():
            problems.append(f"--stack {spec!r}: adapter folder {entry.path!r} not found.")
    if config.stack and config.output and config.resolved_adapter_name() in names:
        problems.append(
            f"The new adapter's name {config.resolved_adapter_name()!r} is also a --stack name; "
            "pass --adapter-name with another name."
        )
    return problems


def _flag(name: str) -> str:
    return name.replace("_", "-")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a YAML file and explicit overrides.

    Args:
        path: A YAML file whose keys are the flag names (dashes or underscores), or ``None``.
        overrides: Values that take precedence over the file, keyed by field name.

    Returns:
        The merged settings (not yet validated; call :meth:`TrainConfig.validate`).

    Raises:
        TrainingConfigError: The file is missing or not a mapping, or a key or value is invalid.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_yaml(Path(path)))
    for name, value in (overrides or {}).items():
        values[field_name(name, "arguments")] = value
    return config_from_mapping(values, source=str(path) if path else "arguments")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TrainingConfigError(f"Cannot read config file {str(path)!r}: {err.strerror}. Check the --config path.") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TrainingConfigError(f"Config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainingConfigError(
            f"Config file {str(path)!r} must contain a mapping of option names to values, got {type(data).__name__}."
        )
    return {field_name(str(key), str(path)): value for key, value in data.items()}


def field_name(key: str, source: str = "arguments") -> str:
    """Return the field name for an option key (``--learning-rate``, ``learning-rate`` or ``learning_rate``).

    Raises:
        TrainingConfigError: No field has that name; the message lists the known options.
    """
    name = key.strip().lstrip("-").replace("-", "_")
    if name not in FIELD_HELP:
        known = ", ".join(_flag(n) for n in FIELD_HELP)
        raise TrainingConfigError(f"Unknown option {key!r} in {source}; known options: {known}.")
    return name


def config_from_mapping(values: Mapping[str, Any], source: str = "arguments") -> TrainConfig:
    """Convert and check the type of each value, then build a :class:`TrainConfig`.

    Raises:
        TrainingConfigError: Values of the wrong type, all listed together.
    """
    hints = typing.get_type_hints(TrainConfig)
    converted: dict[str, Any] = {}
    problems = []
    for key, value in values.items():
        name = field_name(key, source)
        try:
            converted[name] = _convert(value, hints[name])
        except (TypeError, ValueError) as err:
            problems.append(f"Invalid value for {_flag(name)} in {source}: {value!r} {err}.")
    if problems:
        raise TrainingConfigError("\n".join(problems))
    return TrainConfig(**converted)


def _convert(value: Any, hint: Any) -> Any:
    """Convert one value to the field type ``hint`` (``int``, ``float``, ``bool``, ``str``, optional, lists)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(arg for arg in args if arg is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return _to_list(value)
    if hint is bool:
        return _to_bool(value)
    if hint is int:
        return _to_int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("is not a number")
        return float(value)
    if value is None or isinstance(value, (list, dict)):
        raise TypeError("is not a string")
    return str(value)


def _to_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    if isinstance(value, (list, tuple)):
        return [str(part).strip() for part in value]
    raise TypeError("is not a list or a comma-separated string")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise TypeError("is not true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("is not an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, str)):
        try:
            return int(value)
        except ValueError:
            pass
    raise ValueError("is not an integer")
