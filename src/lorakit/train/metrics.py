"""Evaluation metrics: accuracy and macro-F1 for classifiers, perplexity for causal LMs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction


def argmax_logits(logits: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted class per row, so evaluation does not store every logit."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Return ``accuracy`` and ``f1_macro`` (the unweighted mean of per-class F1) for predicted class ids."""
    predicted = np.asarray(prediction.predictions).reshape(-1)
    labels = np.asarray(prediction.label_ids).reshape(-1)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def perplexity(loss: float) -> float:
    """Return ``exp(loss)``, the perplexity of a mean token cross-entropy in nats (``inf`` on overflow)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def add_perplexity(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return copies of the log entries with ``eval_perplexity`` beside every ``eval_loss``."""
    result = []
    for entry in entries:
        entry = dict(entry)
        if "eval_loss" in entry:
            entry["eval_perplexity"] = perplexity(entry["eval_loss"])
        result.append(entry)
    return result
