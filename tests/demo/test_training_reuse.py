"""Reusing a trained demo adapter only when it was trained with the same settings and rows."""

import json
import logging

import pytest

from lorakit.demo import training
from lorakit.demo.settings import DemoSettings
from lorakit.errors import LorakitError


@pytest.fixture
def trained_folder(tmp_path, monkeypatch):
    """Stand in for lorakit.train: write a fake adapter folder and count the calls."""
    calls = []

    def fake_training(settings, domain, data_file, folder, quiet):
        calls.append((settings, domain))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"")
        (folder / "metrics.json").write_text(json.dumps({"train": {"train_loss": 0.5, "global_step": 7}}))

    monkeypatch.setattr(training, "_run_training", fake_training)
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text('{"text": "good", "label": "positive"}\n')
    return tmp_path / "adapter", data_file, calls


def test_first_run_trains(trained_folder):
    folder, data_file, calls = trained_folder
    adapter = training.train_or_reuse(DemoSettings(size="tiny"), "movies", data_file, folder, retrain=False, quiet=True)
    assert len(calls) == 1
    assert adapter.reused is False
    assert adapter.train_loss == 0.5
    assert adapter.steps == 7
    record = json.loads((folder / training.RECORD_NAME).read_text())
    assert record["domain"] == "movies"
    assert record["size"] == "tiny"


def test_same_settings_reuse(trained_folder):
    folder, data_file, calls = trained_folder
    settings = DemoSettings(size="tiny")
    training.train_or_reuse(settings, "movies", data_file, folder, retrain=False, quiet=True)
    again = training.train_or_reuse(settings, "movies", data_file, folder, retrain=False, quiet=True)
    assert len(calls) == 1
    assert again.reused is True
    assert again.seconds == 0.0
    assert again.steps == 7


def test_retrain_flag_trains_again(trained_folder):
    folder, data_file, calls = trained_folder
    settings = DemoSettings(size="tiny")
    training.train_or_reuse(settings, "movies", data_file, folder, retrain=False, quiet=True)
    training.train_or_reuse(settings, "movies", data_file, folder, retrain=True, quiet=True)
    assert len(calls) == 2


def test_other_seed_or_rows_train_again(trained_folder, caplog, monkeypatch):
    folder, data_file, calls = trained_folder
    # An in-process CLI run turns propagation off; caplog listens on the root logger.
    monkeypatch.setattr(logging.getLogger("lorakit"), "propagate", True)
    training.train_or_reuse(DemoSettings(size="tiny"), "movies", data_file, folder, retrain=False, quiet=True)
    with caplog.at_level("INFO", logger="lorakit.demo.training"):
        training.train_or_reuse(DemoSettings(size="tiny", seed=1), "movies", data_file, folder, retrain=False, quiet=True)
    assert "seed: 42 -> 1" in caplog.text
    data_file.write_text('{"text": "bad", "label": "negative"}\n')
    training.train_or_reuse(DemoSettings(size="tiny", seed=1), "movies", data_file, folder, retrain=False, quiet=True)
    assert len(calls) == 3


def test_blocker_without_record(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    assert "demo_training.json is missing" in training.reuse_blocker(tmp_path, {"domain": "movies"})


def test_invalid_settings_name_the_flag():
    with pytest.raises(LorakitError, match=r"Invalid value for --size: 'huge' is not one of tiny, small, full"):
        DemoSettings(size="huge")
    with pytest.raises(LorakitError, match=r"Invalid value for --model: 'gpt2' is not one of minilm, smollm2"):
        DemoSettings(model="gpt2")
