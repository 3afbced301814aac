"""Batch prediction over rows that each name their own adapter, stack, or the base model."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorakit.adapters.heads import new_head_report_quiet
from lorakit.adapters.io import read_adapter
from lorakit.adapters.model import Adapter
from lorakit.assets import resolve_model
from lorakit.errors import LorakitError, RoutingError
from lorakit.runtime import MultiAdapterModel

logger = logging.getLogger(__name__)

TASKS = ("seq-cls", "causal-lm")
_PEFT_TASKS = {"SEQ_CLS": "seq-cls", "CAUSAL_LM": "causal-lm"}
_HEAD_NAMES = ("classifier", "score")


@dataclass
class Predictor:
    """A base model with adapters loaded, its tokenizer, and the task it predicts for."""

    runtime: MultiAdapterModel
    tokenizer: Any
    task: str
    labels: dict[str, dict[int, str]] = field(default_factory=dict)  # adapter (or "" for base) -> id2label


def load_predictor(
    model: str,
    adapters: Mapping[str, str | os.PathLike],
    *,
    task: str | None = None,
    trust_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Predictor:
    """Load the base model named ``model`` (a folder, a hub name, ``minilm`` or ``smollm2``) with ``adapters``.

    Args:
        model: The base model.
        adapters: Name -> adapter folder.
        task: ``"seq-cls"`` or ``"causal-lm"``; by default taken from the adapters' ``task_type``.
        trust_pickle: Allow ``adapter_model.bin`` pickle files.
        dtype: The dtype to load the base model in.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    loaded = {name: read_adapter(path, name, trust_pickle=trust_pickle) for name, path in adapters.items()}
    task = task or _task_from_adapters(loaded)
    model_path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if task == "seq-cls":
        config = AutoConfig.from_pretrained(model_path)
        num_labels = _num_labels(loaded, config)
        torch.manual_seed(0)  # a head that no adapter replaces is new; make it the same on every run
        with new_head_report_quiet(loaded.values()):
            base = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels, dtype=dtype)
    else:
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    base.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(base.config, "pad_token_id", None) is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    runtime = MultiAdapterModel(base)
    if loaded:
        runtime.load_adapters(loaded)
    labels = {name: _id2label(adapter.config.get("id2label")) for name, adapter in loaded.items()}
    labels[""] = _id2label(getattr(base.config, "id2label", None))
    return Predictor(runtime, tokenizer, task, {k: v for k, v in labels.items() if v})


def _task_from_adapters(adapters: Mapping[str, Adapter]) -> str:
    found = {name: _PEFT_TASKS.get(str(a.task_type or "").upper()) for name, a in adapters.items()}
    tasks = set(found.values()) - {None}
    if len(tasks) == 1:
        return tasks.pop()
    detail = ", ".join(f"{name}: {adapter.task_type}" for name, adapter in adapters.items()) or "no adapters"
    raise LorakitError(
        f"Cannot tell the task from the adapters' task_type ({detail}); pass --task seq-cls or --task causal-lm."
    )


def _num_labels(adapters: Mapping[str, Adapter], config: Any) -> int:
    counts = {}
    for name, adapter in adapters.items():
        if adapter.config.get("id2label"):
            counts[name] = len(adapter.config["id2label"])
            continue
        for path, tensors in adapter.module_copies.items():
            if path.rsplit(".", 1)[-1] in _HEAD_NAMES and "weight" in tensors:
                counts[name] = int(tensors["weight"].shape[0])
    if len(set(counts.values())) > 1:
        raise LorakitError(
            f"The adapters classify into different numbers of labels ({counts}); one batch needs heads of one "
            "shape. Predict with each group of adapters separately."
        )
    return next(iter(counts.values()), getattr(config, "num_labels", 2))


def _id2label(mapping: Mapping | None) -> dict[int, str]:
    if not mapping:
        return {}
    return {int(key): str(value) for key, value in mapping.items()}


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``{"text": ..., "adapter": ...}`` rows from a JSON Lines file, checking each one."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise LorakitError(f"{path}, line {number}: invalid JSON ({err.msg}).") from err
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise LorakitError(f'{path}, line {number}: expected an object with a "text" string, got {line.strip()[:80]!r}.')
            rows.append(row)
    if not rows:
        raise LorakitError(f"{path} contains no rows; write one JSON object per line.")
    return rows


def predict(
    predictor: Predictor,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    max_length: int = 512,
    chat: bool = False,
    **generation: Any,
) -> Iterator[dict[str, Any]]:
    """Predict each row with the adapter or stack it names, batching rows whatever they name.

    Yields each input row with ``label`` and ``logits`` (sequence classification) or
    ``generated`` (causal LM) added, in input order.
    """
    loaded = predictor.runtime.adapters
    specs = [_row_spec(row, number, loaded) for number, row in enumerate(rows, start=1)]
    for start in range(0, len(rows), batch_size):
        batch_rows = rows[start : start + batch_size]
        batch_specs = specs[start : start + batch_size]
        texts = [row["text"] for row in batch_rows]
        if predictor.task == "seq-cls":
            results = _classify(predictor, texts, batch_specs, max_length)
        else:
            results = _generate(predictor, texts, batch_specs, max_length, chat, generation)
        for row, result in zip(batch_rows, results, strict=True):
            yield {**row, **result}


def _row_spec(row: Mapping[str, Any], number: int, loaded: list[str]) -> Any:
    spec = row.get("adapter")
    if isinstance(spec, str):
        names = [spec]
    elif isinstance(spec, Mapping):
        names = list(spec)
    else:
        names = []
    unknown = [name for name in names if name not in loaded]
    if unknown or not (spec is None or isinstance(spec, (str, Mapping))):
        raise RoutingError(
            f"Row {number}: invalid adapter {spec!r}; use a loaded name ({', '.join(loaded) or 'none loaded'}), "
            "an object of name to weight, or null for the base model."
        )
    return spec


def _classify(predictor: Predictor, texts: list[str], specs: list, max_length: int) -> list[dict[str, Any]]:
    inputs = predictor.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = predictor.runtime(**inputs, adapter_names=specs).logits.float()
    results = []
    for spec, row_logits in zip(specs, logits, strict=True):
        label_id = int(row_logits.argmax())
        names = _labels_for(predictor, spec)
        results.append({"label": names.get(label_id, label_id), "logits": [round(v, 6) for v in row_logits.tolist()]})
    return results


def _labels_for(predictor: Predictor, spec: Any) -> dict[int, str]:
    names = [spec] if isinstance(spec, str) else list(spec or [])
    for name in names:
        if name in predictor.labels:
            return predictor.labels[name]
    return predictor.labels.get("", {})


def _generate(
    predictor: Predictor, texts: list[str], specs: list, max_length: int, chat: bool, generation: dict
) -> list[dict[str, Any]]:
    tokenizer = predictor.tokenizer
    if chat:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts
        ]
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    settings = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **generation}
    with torch.no_grad():
        output = predictor.runtime.generate(**inputs, adapter_names=specs, **settings)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [{"generated": text} for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def write_rows(rows: Iterator[dict[str, Any]], output: str | os.PathLike | None) -> int:
    """Write rows as JSON Lines to ``output`` (atomically) or stdout; return the count."""
    import sys
    import tempfile

    if output is None:
        count = 0
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        return count
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, delete=False, suffix=".tmp") as handle:
        try:
            count = 0
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, target)
    return count
