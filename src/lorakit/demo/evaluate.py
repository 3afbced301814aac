"""Scoring one model configuration on the demo's test sets: an activated stack, or a routed mixed batch."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from lorakit.demo.data import LABELS
from lorakit.runtime import MultiAdapterModel
from lorakit.runtime.routing import RowSpec


@dataclass
class TestSet:
    """One domain's held-out rows: texts and class ids (0 negative, 1 positive)."""

    domain: str
    texts: list[str]
    labels: torch.Tensor  # (n,)

    @classmethod
    def from_rows(cls, domain: str, rows: list[dict[str, str]]) -> TestSet:
        return cls(domain, [row["text"] for row in rows], torch.tensor([LABELS.index(row["label"]) for row in rows]))


@dataclass
class Scores:
    """A configuration's logits on every test set and the time it took to compute them.

    Attributes:
        logits: Domain -> ``(n, 2)`` logits, rows in test-set order.
        seconds: Wall time of the forward passes, tokenization included.
    """

    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def accuracy(self, test_sets: Mapping[str, TestSet]) -> dict[str, float]:
        """Return the fraction of rows whose highest logit is the true class, per domain."""
        accuracy = {}
        for domain, test_set in test_sets.items():
            correct = int((self.logits[domain].argmax(dim=-1) == test_set.labels).sum())
            accuracy[domain] = correct / len(test_set.labels)
        return accuracy


class Scorer:
    """Runs the runtime's model over test sets in batches, without gradients.

    Args:
        runtime: The runtime holding the base model and every adapter to score.
        tokenizer: The base model's tokenizer.
        max_length: Tokens kept per text.
        batch_size: Rows per forward pass.
        quiet: Turn off the progress bars.
    """

    def __init__(self, runtime: MultiAdapterModel, tokenizer: Any, max_length: int, batch_size: int, quiet: bool) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.quiet = quiet

    def _logits(self, texts: list[str], adapter_names: list[RowSpec] | None = None) -> torch.Tensor:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.no_grad():
            return self.runtime(**encoded, adapter_names=adapter_names).logits.float()

    def score_stack(self, label: str, spec: RowSpec | Mapping[str, float], test_sets: Mapping[str, TestSet]) -> Scores:
        """Activate ``spec`` (``None``, a name or ``{name: weight}``) and score every test set with it."""
        self.runtime.activate(spec)
        scores = Scores()
        total = sum(-(-len(t.texts) // self.batch_size) for t in test_sets.values())
        started = time.perf_counter()
        with tqdm(total=total, desc=label, unit="batch", leave=False, disable=self.quiet or None) as progress:
            for domain, test_set in test_sets.items():
                parts = []
                for start in range(0, len(test_set.texts), self.batch_size):
                    parts.append(self._logits(test_set.texts[start : start + self.batch_size]))
                    progress.update()
                scores.logits[domain] = torch.cat(parts)
        scores.seconds = time.perf_counter() - started
        self.runtime.activate(None)
        return scores

    def score_routed(self, label: str, routes: Mapping[str, RowSpec], test_sets: Mapping[str, TestSet]) -> Scores:
        """Score one mixed stream of all test sets, each row routed to ``routes[its domain]``.

        The domains' rows alternate, so every batch contains rows for different adapters.
        """
        order = _interleave({domain: len(test_set.texts) for domain, test_set in test_sets.items()})
        rows_logits: list[torch.Tensor] = []
        started = time.perf_counter()
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc=label, unit="batch", leave=False, disable=self.quiet or None):
            chunk = order[start : start + self.batch_size]
            texts = [test_sets[domain].texts[index] for domain, index in chunk]
            rows_logits.append(self._logits(texts, adapter_names=[routes[domain] for domain, _ in chunk]))
        seconds = time.perf_counter() - started
        stacked = torch.cat(rows_logits)  # (total rows, 2), in stream order
        scores = Scores(seconds=seconds)
        for domain, test_set in test_sets.items():
            positions = [position for position, (row_domain, _) in enumerate(order) if row_domain == domain]
            scores.logits[domain] = stacked[positions]  # stream order within a domain is test-set order
        return scores


def _interleave(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Return ``(domain, row index)`` pairs taking one row of each domain in turn until all are used."""
    order = []
    for index in range(max(counts.values(), default=0)):
        order.extend((domain, index) for domain, count in counts.items() if index < count)
    return order


def max_logit_difference(first: Scores, second: Scores) -> float:
    """Return the largest absolute difference between two configurations' logits over all test sets."""
    return max(float((first.logits[d] - second.logits[d]).abs().max()) for d in first.logits)
