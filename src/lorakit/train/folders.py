"""The output folder of a run: refuse to replace an adapter, clean up for ``--overwrite``, find the checkpoint to resume."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from transformers.trainer_utils import get_last_checkpoint

from lorakit.adapters.io import CONFIG_NAME, PICKLE_NAME, SAFETENSORS_NAME
from lorakit.errors import OutputExistsError, TrainingConfigError
from lorakit.train.config import TrainConfig
from lorakit.train.report import OUTPUT_NAMES, SETTINGS_NAME

logger = logging.getLogger(__name__)

CHECKPOINTS_NAME = "checkpoints"
_ADAPTER_FILES = (CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME)
# Settings that may change between a run and its --resume without changing the result.
_RESUME_FREE_SETTINGS = {"resume", "overwrite", "quiet", "save_steps", "save_total_limit"}


def checkpoint_folder(output: Path) -> Path:
    """Return where the Trainer writes ``checkpoint-N`` folders."""
    return output / CHECKPOINTS_NAME


def check_output(output: Path, config: TrainConfig) -> str | None:
    """Check ``output`` against ``--overwrite`` and ``--resume`` without changing anything.

    Returns:
        The checkpoint to resume from, or ``None`` for a fresh run.

    Raises:
        OutputExistsError: The folder holds an adapter or checkpoints, and neither
            ``--overwrite`` nor ``--resume`` was given.
        TrainingConfigError: ``--resume`` without a checkpoint, or ``output`` is a file.
    """
    if output.exists() and not output.is_dir():
        raise TrainingConfigError(f"--output {str(output)!r} is a file; pass a folder path.")
    checkpoints = checkpoint_folder(output)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if config.resume:
        if last is None:
            raise TrainingConfigError(
                f"--resume: no checkpoint-N folder in {str(checkpoints)!r}. Checkpoints are written when "
                "training with --save-steps N; run without --resume to start over."
            )
        _warn_changed_settings(output, config)
        logger.info("Resuming from %s", last)
        return last
    if config.overwrite:
        return None
    if (output / CONFIG_NAME).is_file():
        raise OutputExistsError(
            f"Output folder {str(output)!r} already holds an adapter ({CONFIG_NAME}); pass --overwrite to replace "
            "it, or choose another --output."
        )
    if last is not None:
        raise OutputExistsError(
            f"Output folder {str(output)!r} holds checkpoints of an earlier run ({Path(last).name}); pass --resume "
            "to continue that run or --overwrite to start over."
        )
    return None


def _warn_changed_settings(output: Path, config: TrainConfig) -> None:
    path = output / SETTINGS_NAME
    if not path.is_file():
        return
    saved: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    current = {key.replace("_", "-"): value for key, value in config.to_dict().items()}
    changed = [
        key for key, value in current.items()
        if key.replace("-", "_") not in _RESUME_FREE_SETTINGS and saved.get(key, value) != value
    ]
    if changed:
        logger.warning(
            "Resuming with settings that differ from the interrupted run (%s); the result will not equal "
            "an uninterrupted run", ", ".join(f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in changed),
        )


def clean_output(output: Path, config: TrainConfig) -> None:
    """Create ``output``; with ``--overwrite``, first remove the files an earlier run wrote there.

    Only files and folders lorakit writes are removed; anything else in the folder stays.
    """
    output.mkdir(parents=True, exist_ok=True)
    if not config.overwrite or config.resume:
        return
    removed = []
    for name in _ADAPTER_FILES + OUTPUT_NAMES:
        if (output / name).is_file():
            (output / name).unlink()
            removed.append(name)
    if checkpoint_folder(output).is_dir():
        shutil.rmtree(checkpoint_folder(output))
        removed.append(CHECKPOINTS_NAME + "/")
    if removed:
        logger.info("--overwrite: removed %s from %s", ", ".join(removed), output)


def remove_empty_checkpoints(output: Path) -> None:
    """Remove the checkpoint folder if the run wrote nothing there."""
    folder = checkpoint_folder(output)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
