"""Class names live in labels.json beside the adapter, which PEFT ignores, and survive a read and write."""

import json
import warnings

import pytest
from factories import make_peft_adapter, tiny_bert
from peft import PeftModel

from lorakit import read_adapter
from lorakit.adapters.io import write_adapter
from lorakit.errors import AdapterFormatError

ID2LABEL = {"0": "negative", "1": "neutral", "2": "positive"}


@pytest.fixture
def labelled(tmp_path):
    folder = make_peft_adapter("bert", tmp_path / "labelled", seed=1)
    (folder / "labels.json").write_text(json.dumps({"id2label": ID2LABEL}))
    return folder


def test_labels_read_into_config(labelled):
    adapter = read_adapter(labelled)
    assert adapter.config["id2label"] == ID2LABEL
    assert adapter.config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}


def test_written_labels_stay_out_of_config(labelled, tmp_path):
    written = write_adapter(read_adapter(labelled), tmp_path / "copy")
    assert "id2label" not in json.loads((written / "adapter_config.json").read_text())
    assert json.loads((written / "labels.json").read_text())["id2label"] == ID2LABEL
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # PEFT warns about unknown config keys
        PeftModel.from_pretrained(tiny_bert(), written)


def test_labels_in_old_config_move_out(labelled, tmp_path):
    config_path = labelled / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = ID2LABEL
    config_path.write_text(json.dumps(config))
    (labelled / "labels.json").unlink()
    written = write_adapter(read_adapter(labelled), tmp_path / "moved")
    assert "id2label" not in json.loads((written / "adapter_config.json").read_text())
    assert json.loads((written / "labels.json").read_text())["id2label"] == ID2LABEL


def test_bad_labels_file_is_rejected(labelled):
    (labelled / "labels.json").write_text(json.dumps({"id2label": ["negative", "positive"]}))
    with pytest.raises(AdapterFormatError, match="labels.json must contain an object like"):
        read_adapter(labelled)
