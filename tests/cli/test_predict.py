"""``lorakit predict`` on the packaged MiniLM: rows routed to their adapters, batched together."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lorakit import MultiAdapterModel
from lorakit.assets import asset_path

TEXTS = ["a warm, funny film", "dull and far too long", "the airline lost my bag", "great crew, on time"]


def minilm():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(asset_path("minilm"), num_labels=2).eval()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    for seed, name in ((1, "movies"), (2, "tweets")):
        peft_model = get_peft_model(minilm(), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for key, parameter in peft_model.named_parameters():
                if "lora_" in key or "modules_to_save" in key:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        peft_model.save_pretrained(root / name)
        (root / name / "labels.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive"}}))
    return root


def test_predict_routes_rows(run_cli, adapters, tmp_path):
    rows = [
        {"text": TEXTS[0], "adapter": "movies"},
        {"text": TEXTS[1], "adapter": None},
        {"text": TEXTS[2], "adapter": "tweets"},
        {"text": TEXTS[3], "adapter": {"movies": 0.5, "tweets": 0.5}},
    ]
    input_path = tmp_path / "rows.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.jsonl"
    code, _, err = run_cli(
        "--quiet", "predict", "--model", "minilm", "--adapter", f"movies={adapters / 'movies'}",
        "--adapter", f"tweets={adapters / 'tweets'}", "--input", input_path, "--output", output, "--batch-size", 3,
    )
    assert code == 0, err
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["text"] for r in results] == TEXTS
    runtime = MultiAdapterModel(minilm())
    runtime.load_adapter(adapters / "movies", "movies")
    runtime.load_adapter(adapters / "tweets", "tweets")
    tokenizer = AutoTokenizer.from_pretrained(asset_path("minilm"))
    for row, result in zip(rows, results):
        runtime.activate(row["adapter"])
        with torch.no_grad():
            alone = runtime(**tokenizer([row["text"]], return_tensors="pt")).logits[0]
        torch.testing.assert_close(torch.tensor(result["logits"]), alone, rtol=1e-4, atol=1e-4)
        if row["adapter"] is not None:
            assert result["label"] == ["negative", "positive"][int(alone.argmax())]


def test_predict_errors(run_cli, adapters, tmp_path):
    input_path = tmp_path / "rows.jsonl"
    input_path.write_text(json.dumps({"text": "fine", "adapter": "movis"}) + "\n")
    code, _, err = run_cli("predict", "--model", "minilm", "--adapter", "movies", "--input", input_path)
    assert code == 2
    assert "'movies' is not NAME=PATH" in err
    code, _, err = run_cli("predict", "--model", "minilm", "--adapter", f"movies={adapters / 'movies'}", "--input", input_path)
    assert code == 1
    assert "Row 1: invalid adapter 'movis'; use a loaded name (movies" in err
    code, _, err = run_cli("predict", "--model", "minilm", "--adapter", f"movies={adapters / 'movies'}", "--input", tmp_path / "none.jsonl")
    assert code == 2
    input_path.write_text("{not json\n")
    code, _, err = run_cli("predict", "--model", "minilm", "--adapter", f"movies={adapters / 'movies'}", "--input", input_path)
    assert code == 1
    assert "line 1: invalid JSON" in err
    code, _, err = run_cli("predict", "--model", "minilm", "--adapter", f"movies={adapters / 'movies'}", "--input", input_path, "--task", "nope")
    assert code == 2
    assert "'nope' is not one of seq-cls, causal-lm" in err
