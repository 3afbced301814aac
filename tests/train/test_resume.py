"""Checkpoints and --resume: an interrupted run that is resumed ends where an uninterrupted one does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from lorakit.errors import OutputExistsError, TrainingConfigError
from lorakit.train import train

from .helpers import review_rows, write_csv


class StopAfterCheckpoint(TrainerCallback):
    """Raise right after the checkpoint of one step is written, as a crash or Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"stopped after checkpoint {self.step}")


def _settings(model_dir, data, output, **changes):
    # 56 training rows in batches of 8, accumulated by 2: 4 optimizer steps per epoch, 8 in all.
    settings = dict(
        model=str(model_dir), dataset=str(data), task="seq-cls", output=str(output), r=4, lora_alpha=8,
        lora_dropout=0.2, epochs=2, batch_size=8, gradient_accumulation=2, learning_rate=5e-3,
        validation_size=8, save_steps=2, eval_steps=3, quiet=True,
    )
    settings.update(changes)
    return settings


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir, tmp_path_factory):
    """The data file and the adapter of a run that was not interrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    data = write_csv(root / "reviews.csv", review_rows(64))
    train(**_settings(tiny_bert_dir, data, root / "whole"))
    return data, _adapter(root / "whole")


def test_resume_equals_uninterrupted_run(tiny_bert_dir, uninterrupted, tmp_path):
    reviews_csv, expected = uninterrupted
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        # Step 6 lies inside the second epoch, so resuming must skip that epoch's first batches.
        train(**_settings(tiny_bert_dir, reviews_csv, parts), callbacks=[StopAfterCheckpoint(6)])
    assert sorted(p.name for p in (parts / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    result = train(**_settings(tiny_bert_dir, reviews_csv, parts, resume=True))

    actual = _adapter(parts)
    assert sorted(actual) == sorted(expected)
    for key in expected:
        # The same float32 operations in one process on restored weights, optimizer and RNG state.
        assert torch.equal(actual[key], expected[key]), key
    assert result.metrics["train"]["global_step"] == 8
    steps = [entry["step"] for entry in result.metrics["history"] if "eval_loss" in entry]
    assert steps[:3] == [0, 3, 6]


def test_resume_without_optimizer_state_differs(tiny_bert_dir, uninterrupted, tmp_path):
    """The check above can fail: losing the optimizer moments changes the result."""
    reviews_csv, expected = uninterrupted
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        train(**_settings(tiny_bert_dir, reviews_csv, parts), callbacks=[StopAfterCheckpoint(2)])
    (parts / "checkpoints" / "checkpoint-2" / "optimizer.pt").unlink()
    train(**_settings(tiny_bert_dir, reviews_csv, parts, resume=True))
    actual = _adapter(parts)
    differences = [float((actual[key] - expected[key]).abs().max()) for key in expected]
    assert max(differences) > 1e-4


def test_resume_without_checkpoint(tiny_bert_dir, reviews_csv, tmp_path):
    with pytest.raises(TrainingConfigError) as raised:
        train(**_settings(tiny_bert_dir, reviews_csv, tmp_path / "fresh", resume=True))
    assert "--resume: no checkpoint-N folder in" in str(raised.value)
    assert "when training with --save-steps N" in str(raised.value)


def test_leftover_checkpoints_need_resume_or_overwrite(tiny_bert_dir, reviews_csv, tmp_path):
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        train(**_settings(tiny_bert_dir, reviews_csv, parts, epochs=1), callbacks=[StopAfterCheckpoint(2)])
    with pytest.raises(OutputExistsError) as raised:
        train(**_settings(tiny_bert_dir, reviews_csv, parts, epochs=1))
    assert "holds checkpoints of an earlier run (checkpoint-2); pass --resume" in str(raised.value)
    train(**_settings(tiny_bert_dir, reviews_csv, parts, epochs=1, overwrite=True))
    assert json.loads((parts / "metrics.json").read_text())["train"]["global_step"] == 4
