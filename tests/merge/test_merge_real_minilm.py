"""``merge`` on the packaged all-MiniLM-L6-v2 against PEFT's merge_and_unload, on real sentences."""

from __future__ import annotations

import pytest
import torch
from combine_factories import make_adapter
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorakit.assets import asset_path
from lorakit.errors import AssetNotFoundError
from lorakit.merge import merge_to_folder

pytestmark = pytest.mark.real

SENTENCES = ["A gripping, beautifully acted film.", "Dull and far too long; I left early."]


@pytest.fixture(scope="module")
def minilm_folder():
    try:
        return asset_path("minilm")
    except AssetNotFoundError as err:
        pytest.skip(str(err))


def test_merge_minilm_equals_peft(minilm_folder, tmp_path):
    def load():
        return AutoModelForSequenceClassification.from_pretrained(minilm_folder, num_labels=2).eval()

    adapter = make_adapter(
        load, tmp_path / "adapter", seed=3, scale=0.05, r=8, lora_alpha=16,
        target_modules=["query", "value"], task_type="SEQ_CLS",
    )
    report = merge_to_folder("minilm", [f"reviews={adapter}:1.0"], tmp_path / "merged")

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    reference = PeftModel.from_pretrained(load(), str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        got, expected = merged(**batch).logits, reference(**batch).logits
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    assert report.lora_modules == 12  # query and value in each of 6 layers
    assert report.module_copies == 1  # the classifier head
