"""A combined adapter on the packaged MiniLM, run through ``lorakit predict`` beside the stack it replaces."""

from __future__ import annotations

import json

import pytest
from combine_factories import make_adapter
from transformers import AutoModelForSequenceClassification

from lorakit.assets import asset_path
from lorakit.cli.app import main
from lorakit.combine import combine_folders
from lorakit.errors import AssetNotFoundError

pytestmark = pytest.mark.real

TEXTS = ["A gripping, beautifully acted film.", "Dull and far too long; I left early."]


@pytest.fixture(scope="module")
def minilm_folder():
    try:
        return asset_path("minilm")
    except AssetNotFoundError as err:
        pytest.skip(str(err))


def test_combined_adapter_predicts_like_stack(minilm_folder, tmp_path):
    def load():
        return AutoModelForSequenceClassification.from_pretrained(minilm_folder, num_labels=2).eval()

    common = dict(scale=0.05, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS")
    first = make_adapter(load, tmp_path / "first", seed=1, r=8, **common)
    second = make_adapter(load, tmp_path / "second", seed=2, r=4, **common)
    combined, _ = combine_folders([first, second], [0.3, 0.7], tmp_path / "combined", "linear")

    rows = [{"text": text, "adapter": "combined"} for text in TEXTS]
    rows += [{"text": text, "adapter": {"first": 0.3, "second": 0.7}} for text in TEXTS]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    arguments = ["predict", "--model", "minilm", "--input", str(tmp_path / "rows.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    for name, folder in (("combined", combined), ("first", first), ("second", second)):
        arguments += ["--adapter", f"{name}={folder}"]
    with pytest.raises(SystemExit) as finished:
        main(arguments)

    assert finished.value.code == 0
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for alone, stacked in zip(results[:2], results[2:]):
        assert alone["label"] == stacked["label"]
        assert alone["logits"] == pytest.approx(stacked["logits"], abs=2e-5)
