"""The demo's outputs: a rich table on the terminal, ``metrics.json``, ``accuracy.png`` and ``report.md``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.table import Table

from lorakit.demo.data import DOMAINS, LABELS
from lorakit.demo.results import DemoResult

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
REPORT_NAME = "report.md"
CHART_NAME = "accuracy.png"


def write_all(result: DemoResult) -> None:
    """Write ``metrics.json``, ``accuracy.png`` and ``report.md`` into the output folder."""
    result.output.mkdir(parents=True, exist_ok=True)
    write_metrics(result, result.output / METRICS_NAME)
    plot_accuracy(result, result.output / CHART_NAME)
    write_report(result, result.output / REPORT_NAME)


def write_metrics(result: DemoResult, path: Path) -> Path:
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def results_table(result: DemoResult) -> Table:
    """Return the accuracy of every configuration on every test set, with the time each took."""
    table = Table(title=f"Accuracy on held-out rows ({result.settings.model}, size {result.settings.size})")
    table.add_column("configuration", style="bold")
    for domain in result.domains:
        table.add_column(f"{domain} test\n({result.data[domain]['test_rows']} rows)", justify="right")
    table.add_column("time (s)", justify="right")
    table.add_column("what the model applies")
    for configuration in result.configurations:
        cells = [_accuracy_cell(result, configuration.name, domain) for domain in result.domains]
        table.add_row(configuration.name, *cells, f"{configuration.seconds:.1f}", configuration.description)
    return table


def _accuracy_cell(result: DemoResult, name: str, domain: str) -> str:
    value = f"{result.configuration(name).accuracy[domain]:.3f}"
    return f"[green]{value}[/green]" if name == domain else value


def plot_accuracy(result: DemoResult, path: Path) -> Path:
    """Save a grouped bar chart: one group per configuration, one bar per test set, chance level dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede importing pyplot
    import matplotlib.pyplot as plt

    names = [configuration.name for configuration in result.configurations]
    width = 0.8 / len(result.domains)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for offset, domain in enumerate(result.domains):
        positions = [index + (offset - (len(result.domains) - 1) / 2) * width for index in range(len(names))]
        values = [result.configuration(name).accuracy[domain] for name in names]
        bars = axis.bar(positions, values, width, label=f"{domain} test rows")
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (balanced classes)")
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 1.12)  # room above the bars for the legend
    axis.set_ylabel("accuracy")
    axis.set_title(f"lorakit demo: {result.settings.model}, size {result.settings.size}")
    axis.legend(loc="upper left", ncol=len(result.domains) + 1, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(result: DemoResult, path: Path) -> Path:
    """Write ``report.md``: the setup, the results table and chart, the exactness checks, and how to reuse the adapters."""
    sections = [
        _header(result),
        _results_section(result),
        _labels_section(),
        _configurations_section(result),
        _checks_section(result),
        _training_section(result),
        _usage_section(result),
    ]
    path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return path


def _header(result: DemoResult) -> str:
    settings = result.settings
    lines = [
        "# lorakit demo report",
        "",
        f"Base model: {settings.demo_model.description}, from `{result.model_path}`.",
        f"Size `{settings.size}`, seed {settings.seed}; the whole run took {result.seconds:.0f} s.",
        "",
        "Two LoRA adapters were trained on one base model, each on its own sentiment domain and with its own "
        "classifier head. Both were then loaded onto one base model with lorakit's runtime and scored on held-out "
        "rows of both domains:",
        "",
    ]
    for domain in result.domains:
        data = result.data[domain]
        lines.append(
            f"- **{domain}**: {DOMAINS[domain].description}; {data['train_rows']} training and "
            f"{data['test_rows']} test rows, drawn from {data['usable_rows']} usable rows, half of each class."
        )
    return "\n".join(lines)


def _results_section(result: DemoResult) -> str:
    header = "| configuration | " + " | ".join(f"{d} test" for d in result.domains) + " | time (s) | what the model applies |"
    rule = "|---|" + "---:|" * len(result.domains) + "---:|---|"
    rows = []
    for configuration in result.configurations:
        cells = " | ".join(
            f"**{configuration.accuracy[d]:.3f}**" if configuration.name == d else f"{configuration.accuracy[d]:.3f}"
            for d in result.domains
        )
        rows.append(f"| {configuration.name} | {cells} | {configuration.seconds:.1f} | {configuration.description} |")
    total_rows = result.configurations[0].rows if result.configurations else 0
    return "\n".join([
        "## Results",
        "",
        f"Accuracy on the held-out test rows (a model that predicts one class for every row scores 0.500). "
        f"Time is the wall time to score all {total_rows} test rows, tokenization included. "
        "Bold: each adapter on its own domain.",
        "",
        header,
        rule,
        *rows,
        "",
        f"![accuracy per configuration and test set]({CHART_NAME})",
        "",
        f"All numbers are in [{METRICS_NAME}]({METRICS_NAME}).",
    ])


def _labels_section() -> str:
    return "\n".join([
        "## Labels",
        "",
        f"Both domains use one label order: class 0 is `{LABELS[0]}` and class 1 is `{LABELS[1]}`. Rotten "
        "Tomatoes' `rotten` snippets become `negative` and `fresh` ones `positive`; its `plot` rows are plot "
        "summaries, not reviews, and are left out. The tweets' `neutral` rows are left out. Texts that occur with "
        "two different labels are dropped, and duplicates are kept once.",
        "",
        "Because class `k` means the same in both domains, row `k` of each adapter's classifier head scores the "
        "same class. Stacking or combining the two heads therefore adds scores for the same class; with different "
        "orders (say `fresh`, `rotten` beside `negative`, `positive`) the combined head would add a positive score "
        "to a negative one.",
    ])


def _configurations_section(result: DemoResult) -> str:
    first, second = result.domains
    combined = result.combined
    lines = [
        "## The configurations",
        "",
        "- **base**: the base model with the classifier head that both adapters started from (a random "
        f"initialisation from seed {result.settings.seed}). It shows where training began.",
        f"- **{first}**, **{second}**: one adapter active, with its own head.",
        "- **stack**: both adapters active at once with weights 0.5 and 0.5. Every LoRA layer adds "
        "`0.5 * delta_1 + 0.5 * delta_2`, and the head is `base + 0.5 * (head_1 - base) + 0.5 * (head_2 - base)`, "
        "the mean of the two heads.",
    ]
    if "linear" in combined:
        lines.append(
            "- **linear**: one new adapter whose delta on every module equals the stack's exactly, stored with "
            f"rank {combined['linear']['rank']} (the two ranks concatenated), written to `adapters/linear`."
        )
    if "ties" in combined:
        ties = combined["ties"]
        lines.append(
            f"- **ties**: TIES-Merging (https://arxiv.org/abs/2306.01708) with weights 1 and 1 and density "
            f"{ties['density']:g}: each adapter's delta keeps its {ties['density']:.0%} largest entries, each entry "
            "takes the sign of the sum, and the entries that agree with it are averaged. The result is brought "
            f"back to rank {ties['rank']} by an SVD (largest relative error {ties['max_relative_error']:.3f}) "
            "and written to `adapters/ties`. The heads are summed as `base + (head_1 - base) + (head_2 - base)`."
        )
    lines.append(
        "- **routed**: the test rows of both domains interleaved into one stream, so every batch mixes domains, "
        "and each row routed to its own domain's adapter and head (`adapter_names=[...]`, one entry per row)."
    )
    return "\n".join(lines)


def _checks_section(result: DemoResult) -> str:
    checks = result.checks
    return "\n".join([
        "## Exactness checks",
        "",
        "- The stack and the `linear` combination should give the same logits: largest difference "
        f"{checks['stack_vs_linear_max_logit_difference']:.2e} (float32 rounding).",
        "- Each routed row should get what its adapter gives alone: largest difference "
        f"{checks['routed_vs_alone_max_logit_difference']:.2e}.",
    ])


def _training_section(result: DemoResult) -> str:
    settings = result.settings
    lines = [
        "## Training",
        "",
        f"LoRA r={settings.r}, lora_alpha={settings.lora_alpha:g} on "
        f"{', '.join(settings.demo_model.target_modules)}, plus a trainable classifier head per adapter "
        f"(`modules_to_save`); {settings.rows.epochs:g} epochs, learning rate {settings.demo_model.learning_rate:g}, "
        f"batch size {settings.batch_size}, at most {settings.max_length} tokens per text.",
        "",
        "| adapter | steps | mean training loss | training time (s) |",
        "|---|---:|---:|---|",
    ]
    for name, adapter in result.adapters.items():
        loss = "-" if adapter.train_loss is None else f"{adapter.train_loss:.3f}"
        when = "reused from an earlier run" if adapter.reused else f"{adapter.seconds:.0f}"
        lines.append(f"| {name} | {adapter.steps if adapter.steps is not None else '-'} | {loss} | {when} |")
    lines += ["", "Each adapter folder also holds lorakit train's own `metrics.json`, `loss.png` and model card."]
    return "\n".join(lines)


def _usage_section(result: DemoResult) -> str:
    first, second = result.domains
    return "\n".join([
        "## Use the adapters",
        "",
        "The folders under `adapters/` are PEFT adapter folders. With lorakit:",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "from lorakit import MultiAdapterModel",
        "",
        f'base = AutoModelForSequenceClassification.from_pretrained("{result.model_path}", num_labels=2)',
        f'tokenizer = AutoTokenizer.from_pretrained("{result.model_path}")',
        *_padding_lines(result),
        "runtime = MultiAdapterModel(base)",
        f'runtime.load_adapter("{result.output / "adapters" / first}", "{first}")',
        f'runtime.load_adapter("{result.output / "adapters" / second}", "{second}")',
        'batch = tokenizer(["A gorgeous, moving film.", "@united lost my bag again"], padding=True, return_tensors="pt")',
        f'logits = runtime(**batch, adapter_names=["{first}", "{second}"]).logits  # class 1 = positive',
        "```",
        "",
        "Run the demo again with the same options to reuse the trained adapters, or with `--retrain` to train "
        "them again.",
    ])


def _padding_lines(result: DemoResult) -> list[str]:
    """Return the lines a decoder classifier needs: it finds each row's last token through the pad id."""
    if result.settings.model != "smollm2":
        return []
    return [
        "tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token",
        "base.config.pad_token_id = tokenizer.pad_token_id",
    ]
