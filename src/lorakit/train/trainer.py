"""The ``train`` function: a LoRA adapter trained with transformers' Trainer, written as a PEFT folder.

It runs unchanged under ``torchrun`` (data-parallel, gloo on CPU): every process
loads the data and the model, the Trainer synchronises the gradients, and only the
first process writes files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.utils import logging as hf_logging

from lorakit.assets import resolve_model
from lorakit.train import folders, models, report
from lorakit.train.config import TrainConfig, config_from_mapping, field_name
from lorakit.train.metrics import add_perplexity, argmax_logits, classification_metrics, perplexity
from lorakit.train.models import TrainableModel
from lorakit.train.prepare import PreparedData, prepare_data
from lorakit.train.targets import resolve_target_modules
from lorakit.train.tokenization import CausalLMCollator

logger = logging.getLogger(__name__)

# Defaults for evaluation and logging, as fractions of the run's optimizer steps.
_EVAL_FRACTION = 0.2
_LOGGING_FRACTION = 0.05


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        output_dir: The folder holding the adapter, ``metrics.json``, ``loss.png`` and ``README.md``.
        adapter_name: The adapter's name (used inside the stack when one was given).
        metrics: The contents of ``metrics.json``.
        label_names: Class names in id order (seq-cls), else ``None``.
    """

    output_dir: Path
    adapter_name: str
    metrics: dict[str, Any]
    label_names: list[str] | None


class AdapterTrainer(Trainer):
    """A Trainer whose checkpoints hold only the new adapter, saved and restored through a :class:`TrainableModel`.

    Optimizer, scheduler, RNG and trainer state are saved beside it by the Trainer as usual.
    """

    def __init__(self, *args: Any, trainable: TrainableModel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainable = trainable

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            self.trainable.save(Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self.trainable.load_weights(Path(resume_from_checkpoint))


def train(
    config: TrainConfig | None = None,
    /,
    *,
    callbacks: list[TrainerCallback] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a LoRA adapter and write it, with metrics, a loss plot and a model card, to ``config.output``.

    Args:
        config: The settings; keyword ``settings`` (field names of :class:`TrainConfig`)
            override it or stand in for it, e.g. ``train(model="minilm", dataset="reviews.csv",
            task="seq-cls", output="out")``.
        callbacks: Extra ``transformers.TrainerCallback`` objects for the Trainer.
        **settings: Fields of :class:`TrainConfig`.

    Returns:
        The output folder, the adapter name, the metrics and the class names.

    Raises:
        TrainingConfigError: Invalid settings, data, columns, labels or target modules.
        OutputExistsError: The output folder holds an adapter and ``overwrite`` is false.
        AdapterFormatError, AdapterMismatchError: A ``stack`` adapter cannot be loaded onto the model.
    """
    config = _merge_settings(config, settings)
    config.validate()
    output = Path(config.output or "").expanduser()
    resume_from = folders.check_output(output, config)
    quiet = config.quiet or os.environ.get("TQDM_DISABLE") == "1"
    with _progress_bars(not quiet):
        setup = _set_up(config)
        if _is_main_process():
            folders.clean_output(output, config)
            if resume_from is None:  # a resumed run keeps the settings file of the run it continues
                report.write_settings(output, config)
        trainer = _make_trainer(config, setup, output, callbacks, quiet, resume_from)
        train_output = trainer.train(resume_from_checkpoint=resume_from)
        final_eval = _evaluate(trainer, config) if setup.data.eval is not None else None
    summary = _summarize(config, setup, trainer.state.log_history, train_output, final_eval)
    if trainer.is_world_process_zero():
        _write_outputs(output, setup.trainable, summary)
    return TrainResult(output, summary.adapter_name, summary.to_dict(), setup.data.label_names)


@dataclass
class _Setup:
    """What a run trains: the resolved model path, tokenizer, data and trainable model."""

    model_path: str
    tokenizer: Any
    data: PreparedData
    trainable: TrainableModel
    target_modules: list[str]
    parameter_counts: tuple[int, int]


def _set_up(config: TrainConfig) -> _Setup:
    """Load the tokenizer, data and base model, and add the new adapter to the model."""
    model_path = resolve_model(config.model or "")
    task = config.task or ""
    tokenizer = models.load_tokenizer(model_path)
    data = prepare_data(config, tokenizer)
    set_seed(config.seed)  # the classifier head and the adapter start from this seed
    base = models.load_base_model(model_path, task, data.label_names, tokenizer.pad_token_id)
    head = models.head_name(base, task)
    targets = resolve_target_modules(base, config.target_modules, head)
    trainable = models.build_trainable(base, models.make_lora_config(config, targets, head, model_path), config)
    counts = models.count_parameters(trainable.model)
    logger.info("Trainable parameters: %s of %s", f"{counts[0]:,}", f"{counts[1]:,}")
    return _Setup(model_path, tokenizer, data, trainable, targets, counts)


def _summarize(
    config: TrainConfig,
    setup: _Setup,
    history: list[dict[str, Any]],
    train_output: Any,
    final_eval: dict[str, Any] | None,
) -> report.RunSummary:
    if config.task == "causal-lm":
        history = add_perplexity(history)
    return report.RunSummary(
        config=config,
        model_path=setup.model_path,
        adapter_name=config.resolved_adapter_name(),
        data_description=setup.data.description,
        train_rows=len(setup.data.train),
        eval_rows=len(setup.data.eval) if setup.data.eval is not None else 0,
        target_modules=setup.target_modules,
        trainable_parameters=setup.parameter_counts[0],
        total_parameters=setup.parameter_counts[1],
        label_names=setup.data.label_names,
        history=history,
        train_metrics={**train_output.metrics, "global_step": train_output.global_step},
        initial_eval=next((entry for entry in history if entry.get("step") == 0 and "eval_loss" in entry), None),
        final_eval=final_eval,
    )


def _merge_settings(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    if not settings:
        return config or TrainConfig()
    overrides = config_from_mapping(settings)
    if config is None:
        return overrides
    explicit = {field_name(key) for key in settings}
    return replace(config, **{name: getattr(overrides, name) for name in explicit})


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Turn the progress bars of datasets and transformers off inside the block unless ``enabled``.

    Setting ``TQDM_DISABLE`` is not enough once tqdm is imported, so both libraries' switches are used.
    """
    libraries = [
        (datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
        (hf_logging.is_progress_bar_enabled, hf_logging.disable_progress_bar, hf_logging.enable_progress_bar),
    ]
    was_enabled = [is_enabled() for is_enabled, _, _ in libraries]
    if not enabled:
        for _, disable, _ in libraries:
            disable()
    try:
        yield
    finally:
        for (_, _, enable), was in zip(libraries, was_enabled):
            if was and not enabled:
                enable()


def _is_main_process() -> bool:
    """Tell whether this is the first process; ``torchrun`` sets ``RANK`` for each one."""
    return int(os.environ.get("RANK", "0")) == 0


def _make_trainer(
    config: TrainConfig,
    setup: _Setup,
    output: Path,
    callbacks: list[TrainerCallback] | None,
    quiet: bool,
    resume_from: str | None,
) -> AdapterTrainer:
    has_eval = setup.data.eval is not None
    args = _training_arguments(config, output, has_eval=has_eval, quiet=quiet, resuming=resume_from is not None)
    is_classifier = config.task == "seq-cls"
    if is_classifier:
        collator = DataCollatorWithPadding(setup.tokenizer)
    else:
        collator = CausalLMCollator(setup.tokenizer.pad_token_id)
    trainer = AdapterTrainer(
        model=setup.trainable.model,
        args=args,
        data_collator=collator,
        train_dataset=setup.data.train,
        eval_dataset=setup.data.eval,
        compute_metrics=classification_metrics if is_classifier else None,
        preprocess_logits_for_metrics=argmax_logits if is_classifier else None,
        callbacks=callbacks,
        trainable=setup.trainable,
    )
    if quiet:
        trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
    return trainer


def _training_arguments(
    config: TrainConfig, output: Path, *, has_eval: bool, quiet: bool, resuming: bool
) -> TrainingArguments:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return TrainingArguments(
        output_dir=str(folders.checkpoint_folder(output)),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=_steps(config.eval_steps, _EVAL_FRACTION),
        # The initial evaluation is already in the log history restored from a checkpoint.
        eval_on_start=has_eval and not resuming,
        prediction_loss_only=config.task != "seq-cls",
        logging_strategy="steps",
        logging_steps=_steps(config.logging_steps, _LOGGING_FRACTION),
        logging_first_step=True,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=quiet,
        remove_unused_columns=False,
        label_names=["labels"],
        # On CPU, transformers 5.25 sets up DDP only with use_cpu=True. Without it the
        # processes stay in ParallelMode.NOT_PARALLEL and never synchronise gradients.
        use_cpu=distributed and not torch.cuda.is_available(),
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def _steps(value: float | None, default_fraction: float) -> float | int:
    """Return an interval in steps (an int from 1 up) or as a fraction of the run (below 1)."""
    if value is None:
        return default_fraction
    return int(value) if value >= 1 else value


def _evaluate(trainer: Trainer, config: TrainConfig) -> dict[str, Any]:
    """Return the evaluation metrics of the trained adapter, reusing an evaluation made at the last step."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if evaluations and evaluations[-1].get("step") == trainer.state.global_step:
        metrics = {key: value for key, value in evaluations[-1].items() if key.startswith("eval_") or key == "epoch"}
    else:
        metrics = trainer.evaluate()
    if config.task == "causal-lm":
        metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
    shown = [
        f"{key.removeprefix('eval_')} {value:.4g}"
        for key, value in metrics.items()
        if isinstance(value, float) and key.startswith("eval_") and not key.endswith(("runtime", "per_second"))
    ]
    logger.info("Final evaluation: %s", ", ".join(shown))
    return metrics


def _write_outputs(output: Path, trainable: TrainableModel, summary: report.RunSummary) -> None:
    trainable.save(output)
    if summary.label_names:
        models.add_label_names(output, summary.label_names)
    report.write_metrics(output, summary)
    report.plot_losses(output, summary)
    report.write_model_card(output, summary)  # replaces the card PEFT writes
    folders.remove_empty_checkpoints(output)
    logger.info("Wrote adapter %r, metrics, loss plot and model card to %s", summary.adapter_name, output)
