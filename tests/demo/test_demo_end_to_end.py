"""``lorakit demo --size tiny`` end to end on the packaged MiniLM and corpora, checked through its outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.real

DOMAINS = ("movies", "tweets")
CONFIGURATIONS = ("base", "movies", "tweets", "stack", "linear", "ties", "routed")


def lorakit_command() -> list[str]:
    """Return the console script beside this Python, as a user would call it, or its equivalent."""
    script = Path(sys.executable).with_name("lorakit")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from lorakit.cli.app import main; main()"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "lorakit-demo"
    environment = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    completed = subprocess.run(
        [*lorakit_command(), "demo", "--size", "tiny", "--output", str(output)],
        capture_output=True, text=True, env=environment, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    return output, completed, metrics


def read_jsonl(path):
    """Read JSON lines, splitting at newlines only: ``str.splitlines`` also splits a text at U+2028."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def accuracy(metrics, configuration, domain):
    for entry in metrics["configurations"]:
        if entry["name"] == configuration:
            return entry["accuracy"][domain]
    raise AssertionError(f"configuration {configuration!r} missing from metrics.json")


def test_table_lists_every_configuration(demo_run):
    _, completed, _ = demo_run
    assert "Accuracy on held-out rows (minilm, size tiny)" in completed.stdout
    for name in CONFIGURATIONS:
        assert name in completed.stdout


@pytest.mark.parametrize("domain", DOMAINS)
def test_adapter_beats_base_on_own_domain(demo_run, domain):
    _, _, metrics = demo_run
    assert accuracy(metrics, domain, domain) > accuracy(metrics, "base", domain)


@pytest.mark.parametrize("domain", DOMAINS)
def test_routed_rows_equal_adapter_alone(demo_run, domain):
    _, _, metrics = demo_run
    assert accuracy(metrics, "routed", domain) == accuracy(metrics, domain, domain)


def test_exactness_checks(demo_run):
    _, _, metrics = demo_run
    assert metrics["checks"]["routed_vs_alone_max_logit_difference"] < 1e-4
    assert metrics["checks"]["stack_vs_linear_max_logit_difference"] < 1e-4
    for domain in DOMAINS:
        assert accuracy(metrics, "linear", domain) == accuracy(metrics, "stack", domain)


def test_metrics_describe_the_run(demo_run):
    _, _, metrics = demo_run
    assert metrics["settings"]["size"] == "tiny"
    assert metrics["labels"] == ["negative", "positive"]
    assert [entry["name"] for entry in metrics["configurations"]] == list(CONFIGURATIONS)
    for domain in DOMAINS:
        assert metrics["data"][domain]["train_rows"] == 400
        assert metrics["data"][domain]["test_rows"] == 200
        assert metrics["adapters"][domain]["reused"] is False
        assert metrics["adapters"][domain]["steps"] == 100  # 400 rows, batch 8, 2 epochs
    assert metrics["combined"]["linear"]["max_relative_error"] == 0.0
    assert metrics["combined"]["ties"]["density"] == 0.5


def test_report_and_chart(demo_run):
    output, _, metrics = demo_run
    report = (output / "report.md").read_text(encoding="utf-8")
    for heading in ("## Results", "## Labels", "## The configurations", "## Exactness checks", "## Training"):
        assert heading in report
    assert "![accuracy per configuration and test set](accuracy.png)" in report
    assert f"| movies | **{accuracy(metrics, 'movies', 'movies'):.3f}** |" in report
    assert (output / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_folders(demo_run):
    output, _, _ = demo_run
    for name in ("movies", "tweets", "linear", "ties"):
        assert (output / "adapters" / name / "adapter_model.safetensors").is_file(), name
    config = json.loads((output / "adapters" / "movies" / "adapter_config.json").read_text())
    assert json.loads((output / "adapters" / "movies" / "labels.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert config["modules_to_save"] == ["classifier"]
    rows = read_jsonl(output / "data" / "tweets-test.jsonl")
    assert len(rows) == 200


def test_peft_reproduces_adapter_accuracy(demo_run):
    """PEFT, given the adapter folder the demo wrote, scores the same accuracy that the runtime reported."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorakit.assets import asset_path

    output, _, metrics = demo_run
    rows = read_jsonl(output / "data" / "movies-test.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(asset_path("minilm"))
    base = AutoModelForSequenceClassification.from_pretrained(asset_path("minilm"), num_labels=2)
    model = PeftModel.from_pretrained(base, output / "adapters" / "movies").eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(rows), 50):
            chunk = rows[start : start + 50]
            batch = tokenizer([row["text"] for row in chunk], truncation=True, max_length=64, padding=True, return_tensors="pt")
            predictions = model(**batch).logits.argmax(-1).tolist()
            correct += sum(p == ["negative", "positive"].index(row["label"]) for p, row in zip(predictions, chunk))
    assert correct / len(rows) == pytest.approx(accuracy(metrics, "movies", "movies"), abs=1e-9)
