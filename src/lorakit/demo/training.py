"""Training the demo's two adapters with :func:`lorakit.train.train`, or reusing ones trained before."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.adapters.io import CONFIG_NAME, SAFETENSORS_NAME
from lorakit.demo.settings import DemoSettings

logger = logging.getLogger(__name__)

RECORD_NAME = "demo_training.json"  # the settings an adapter was trained with, beside it


@dataclass
class TrainedAdapter:
    """One domain's adapter folder and how it came to be there.

    Attributes:
        name: The domain, also the adapter's name.
        path: The PEFT adapter folder.
        reused: The adapter was trained by an earlier run with the same settings.
        seconds: Training time in this run (0 when reused).
        train_loss: Mean training loss of the run that trained it, if recorded.
        steps: Optimizer steps of that run, if recorded.
    """

    name: str
    path: Path
    reused: bool
    seconds: float
    train_loss: float | None
    steps: int | None


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_record(settings: DemoSettings, domain: str, data_file: Path) -> dict[str, Any]:
    """Return what decides an adapter's training: the settings and a checksum of its training rows."""
    return {**settings.training_record(domain), "data_sha256": file_sha256(data_file)}


def reuse_blocker(folder: Path, record: dict[str, Any]) -> str | None:
    """Return why the adapter in ``folder`` cannot be reused for ``record``, or ``None`` if it can."""
    if not (folder / CONFIG_NAME).is_file() or not (folder / SAFETENSORS_NAME).is_file():
        return "no adapter there yet"
    record_path = folder / RECORD_NAME
    if not record_path.is_file():
        return f"{RECORD_NAME} is missing, so its settings are unknown"
    try:
        saved = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{RECORD_NAME} cannot be read ({err})"
    changed = sorted(key for key in record.keys() | saved.keys() if saved.get(key) != record.get(key))
    if changed:
        return "it was trained with other settings (" + ", ".join(
            f"{key}: {saved.get(key)!r} -> {record.get(key)!r}" for key in changed if key != "data_sha256"
        ) + (", other training rows" if "data_sha256" in changed else "") + ")"
    return None


def train_or_reuse(
    settings: DemoSettings, domain: str, data_file: Path, folder: Path, *, retrain: bool, quiet: bool
) -> TrainedAdapter:
    """Train the adapter for ``domain`` into ``folder``, unless it already contains one trained with the same settings.

    Args:
        settings: The demo's settings.
        domain: The domain name, used as the adapter name.
        data_file: JSON lines of ``{"text", "label"}`` training rows.
        folder: The adapter folder; an adapter there is replaced when it is retrained.
        retrain: Train even if a matching adapter exists.
        quiet: Turn off the training progress bar.

    Raises:
        TrainingConfigError: As :func:`lorakit.train.train` raises it.
    """
    record = training_record(settings, domain, data_file)
    blocker = "--retrain was given" if retrain else reuse_blocker(folder, record)
    if blocker is None:
        logger.info("Reusing adapter %r from %s, trained with the same settings (--retrain trains it again)", domain, folder)
        return _trained_adapter(domain, folder, reused=True, seconds=0.0)
    logger.info("Training adapter %r (%s)", domain, blocker)
    started = time.perf_counter()
    _run_training(settings, domain, data_file, folder, quiet)
    seconds = time.perf_counter() - started
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("Trained adapter %r in %.0f s", domain, seconds)
    return _trained_adapter(domain, folder, reused=False, seconds=seconds)


def _run_training(settings: DemoSettings, domain: str, data_file: Path, folder: Path, quiet: bool) -> None:
    from lorakit.train import train

    rows = settings.rows
    train(
        model=settings.model,
        dataset=str(data_file),
        task="seq-cls",
        output=str(folder),
        adapter_name=domain,
        text_column="text",
        label_column="label",
        validation_size=0,  # the demo evaluates on its own held-out test rows afterwards
        max_length=settings.max_length,
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        target_modules=list(settings.demo_model.target_modules),
        epochs=rows.epochs,
        learning_rate=settings.demo_model.learning_rate,
        batch_size=settings.batch_size,
        seed=settings.seed,
        overwrite=True,
        quiet=quiet,
    )


def _trained_adapter(domain: str, folder: Path, *, reused: bool, seconds: float) -> TrainedAdapter:
    """Collect the training loss and step count that ``lorakit.train`` wrote to ``metrics.json``."""
    train_metrics: dict[str, Any] = {}
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        train_metrics = json.loads(metrics_path.read_text(encoding="utf-8")).get("train") or {}
    return TrainedAdapter(
        name=domain,
        path=folder,
        reused=reused,
        seconds=seconds,
        train_loss=train_metrics.get("train_loss"),
        steps=train_metrics.get("global_step"),
    )
