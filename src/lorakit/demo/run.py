"""The demo end to end: draw the rows, train two adapters, score seven configurations, write the report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lorakit.demo import report
from lorakit.demo.data import DOMAINS, LABELS, load_domain, write_jsonl
from lorakit.demo.evaluate import Scorer, Scores, TestSet, max_logit_difference
from lorakit.demo.results import ConfigurationResult, DemoResult
from lorakit.demo.settings import DEFAULT_OUTPUT, DemoSettings
from lorakit.demo.training import train_or_reuse
from lorakit.errors import LorakitError
from lorakit.runtime import MultiAdapterModel

logger = logging.getLogger(__name__)

STACK_WEIGHTS = (0.5, 0.5)  # the stack and the linear combination: the mean of the two adapters
TIES_WEIGHTS = (1.0, 1.0)  # TIES averages the entries whose signs agree, so each adapter keeps weight 1
TIES_DENSITY = 0.5
EVAL_BATCH_SIZE = 32


def run_demo(
    output: str | Path = DEFAULT_OUTPUT,
    settings: DemoSettings | None = None,
    *,
    retrain: bool = False,
    quiet: bool = False,
) -> DemoResult:
    """Train a movie-review and a tweet sentiment adapter, then compare base, single, stacked, combined and routed models.

    Writes to ``output``: ``data/`` (the rows used), ``adapters/`` (the two trained
    adapters and the two combinations, as PEFT folders), ``metrics.json``,
    ``report.md`` and ``accuracy.png``.

    Args:
        output: The output folder, created if missing.
        settings: Model, size and training settings; the defaults when ``None``.
        retrain: Train the adapters even if ones trained with the same settings are in ``output``.
        quiet: Turn off progress bars.

    Returns:
        The measured results, as also written to ``metrics.json``.

    Raises:
        AssetNotFoundError: A packaged model or corpus is not installed.
        LorakitError: ``output`` is a file, or a step failed; the message names it.
    """
    from lorakit.assets import resolve_model

    settings = settings or DemoSettings()
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise LorakitError(f"Invalid value for --output: {str(output)!r} is a file; pass a folder path.")
    started = time.perf_counter()
    logger.info("lorakit demo: model %s, size %s, output %s", settings.model, settings.size, output)
    model_path = resolve_model(settings.model)  # converts SmolLM2 once, or raises if a package is missing
    test_sets, data = _prepare_data(settings, output)
    adapters = {
        domain: train_or_reuse(
            settings, domain, output / "data" / f"{domain}-train.jsonl", output / "adapters" / domain,
            retrain=retrain, quiet=quiet,
        )
        for domain in DOMAINS
    }
    result = DemoResult(settings=settings, output=output, model_path=model_path, data=data, adapters=adapters)
    _score_configurations(result, test_sets, quiet)
    result.seconds = time.perf_counter() - started
    report.write_all(result)
    logger.info("Wrote report.md, accuracy.png and metrics.json to %s in %.0f s", output, result.seconds)
    return result


def _prepare_data(settings: DemoSettings, output: Path) -> tuple[dict[str, TestSet], dict[str, dict[str, Any]]]:
    """Draw each domain's rows, write them to ``output/data`` and return the test sets and row counts."""
    test_sets = {}
    data = {}
    for domain in DOMAINS:
        rows = load_domain(domain, settings.rows.train_rows, settings.rows.test_rows, settings.seed)
        write_jsonl(rows.train, output / "data" / f"{domain}-train.jsonl")
        write_jsonl(rows.test, output / "data" / f"{domain}-test.jsonl")
        test_sets[domain] = TestSet.from_rows(domain, rows.test)
        data[domain] = {
            "source": DOMAINS[domain].description,
            "usable_rows": rows.available,
            "train_rows": len(rows.train),
            "test_rows": len(rows.test),
        }
    return test_sets, data


def _load_runtime(result: DemoResult) -> tuple[MultiAdapterModel, Any]:
    """Load the base model with the classifier head the adapters started from, and both adapters."""
    from transformers import set_seed

    from lorakit.train.models import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(result.model_path)
    # lorakit.train seeds before it builds the model, so this head equals the one each
    # adapter's head was trained from: the base row shows where training started.
    set_seed(result.settings.seed)
    base = load_base_model(result.model_path, "seq-cls", list(LABELS), tokenizer.pad_token_id)
    base.eval()
    runtime = MultiAdapterModel(base)
    runtime.load_adapters({domain: adapter.path for domain, adapter in result.adapters.items()})
    return runtime, tokenizer


def _combine(result: DemoResult, runtime: MultiAdapterModel, method: str, weights: tuple[float, ...], **options: Any) -> str:
    """Combine the two adapters with ``method`` into ``adapters/<method>``, load it, and return its name."""
    from lorakit.combine import combine_folders

    folder = result.output / "adapters" / method
    paths = [adapter.path for adapter in result.adapters.values()]
    # The heads (modules_to_save) combine as base + sum_i w_i * (head_i - base), which
    # needs the base head when the weights do not sum to 1.
    written, combine_report = combine_folders(
        paths, list(weights), folder, method, model=runtime.model, overwrite=True, **options
    )
    runtime.load_adapter(written, method)
    result.combined[method] = {
        "path": str(written),
        "weights": dict(zip(result.adapters, weights)),
        **options,
        "seconds": combine_report.seconds,
        "max_relative_error": combine_report.max_relative_error,
        "rank": max(module.rank for module in combine_report.modules.values()),
    }
    logger.info("Combined the adapters with %s in %.2f s", method, combine_report.seconds)
    return method


def _score_configurations(result: DemoResult, test_sets: dict[str, TestSet], quiet: bool) -> None:
    """Score every configuration in the order of the report, then compute the exactness checks."""
    runtime, tokenizer = _load_runtime(result)
    scorer = Scorer(runtime, tokenizer, result.settings.max_length, EVAL_BATCH_SIZE, quiet)
    scores: dict[str, Scores] = {}
    for name, description, spec in _activation_plan(result, runtime):
        scores[name] = scorer.score_stack(name, spec, test_sets)
        _record(result, name, description, scores[name], test_sets)

    routes = {domain: domain for domain in result.domains}
    scores["routed"] = scorer.score_routed("routed", routes, test_sets)
    description = "one mixed batch stream, each row routed to its own domain's adapter"
    _record(result, "routed", description, scores["routed"], test_sets)

    alone = Scores(logits={domain: scores[domain].logits[domain] for domain in result.domains})
    result.checks = {
        "stack_vs_linear_max_logit_difference": max_logit_difference(scores["stack"], scores["linear"]),
        "routed_vs_alone_max_logit_difference": max_logit_difference(scores["routed"], alone),
    }


def _activation_plan(result: DemoResult, runtime: MultiAdapterModel) -> list[tuple[str, str, Any]]:
    """Return ``(name, description, activation)`` per configuration, combining the adapters on the way."""
    first, second = result.domains
    stack = dict(zip(result.domains, STACK_WEIGHTS))
    linear = _combine(result, runtime, "linear", STACK_WEIGHTS)
    # TIES builds dense deltas and truncates the result by an SVD. Keeping as many ranks
    # as the exact linear sum has (r per adapter) makes that truncation smaller.
    rank = result.settings.r * len(result.adapters)
    ties = _combine(result, runtime, "ties", TIES_WEIGHTS, density=TIES_DENSITY, rank=rank)
    stack_weights = f"{STACK_WEIGHTS[0]:g} and {STACK_WEIGHTS[1]:g}"
    return [
        ("base", "base model, untrained head", None),
        (first, f"{first} adapter alone", first),
        (second, f"{second} adapter alone", second),
        ("stack", f"stack {STACK_WEIGHTS[0]:g} * {first} + {STACK_WEIGHTS[1]:g} * {second}, applied at run time", stack),
        ("linear", f"linear combination, weights {stack_weights}, one adapter", linear),
        ("ties", f"TIES combination, weights {TIES_WEIGHTS[0]:g} and {TIES_WEIGHTS[1]:g}, density {TIES_DENSITY:g}", ties),
    ]


def _record(result: DemoResult, name: str, description: str, scores: Scores, test_sets: dict[str, TestSet]) -> None:
    accuracy = scores.accuracy(test_sets)
    rows = sum(len(test_set.texts) for test_set in test_sets.values())
    result.configurations.append(ConfigurationResult(name, description, accuracy, scores.seconds, rows))
    logger.info(
        "%-7s %s (%.1f s)", name, ", ".join(f"{domain} {value:.3f}" for domain, value in accuracy.items()), scores.seconds
    )
