"""Turning rows into token ids and labels: classification, plain text and chat conversations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from datasets import ClassLabel, Dataset
from transformers import PreTrainedTokenizerBase

from lorakit.errors import TrainingConfigError
from lorakit.train.data import check_no_missing, label_key

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that the cross-entropy loss skips


def encode_classification(
    rows: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    label_column: str,
    label_names: list[str],
    max_length: int,
    split: str,
) -> Dataset:
    """Tokenize ``text_column`` and map ``label_column`` to class ids.

    Returns:
        Rows with ``input_ids``, ``attention_mask`` and ``labels`` only.

    Raises:
        TrainingConfigError: Texts or labels are missing, or a label is not in ``label_names``.
    """
    check_no_missing(rows, text_column, split, "--text-column")
    label2id = {name: index for index, name in enumerate(label_names)}
    is_class_label = isinstance(rows.features[label_column], ClassLabel)
    if not is_class_label:
        check_no_missing(rows, label_column, split, "--label-column")

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encoded = tokenizer([str(text) for text in batch[text_column]], truncation=True, max_length=max_length)
        if is_class_label:
            encoded["labels"] = [_checked_class_id(value, label_names, label_column) for value in batch[label_column]]
        else:
            encoded["labels"] = [label2id[str(label_key(value, label_column))] for value in batch[label_column]]
        return encoded

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc=f"Tokenizing {split} rows")


def _checked_class_id(value: int, names: list[str], column: str) -> int:
    if not 0 <= value < len(names):
        raise TrainingConfigError(
            f"Column {column!r} (--label-column) holds the class id {value}, outside 0..{len(names) - 1} "
            "(-1 marks an unlabelled row); remove such rows."
        )
    return value


def encode_text(rows: Dataset, tokenizer: PreTrainedTokenizerBase, text_column: str, max_length: int, split: str) -> Dataset:
    """Tokenize plain text for causal-LM training, appending EOS, with labels equal to the inputs.

    Rows whose text is empty are dropped (a txt file yields one row per line, blank lines included).
    """
    kept = rows.filter(lambda row: bool(row[text_column] and str(row[text_column]).strip()), desc="Dropping empty rows")
    if len(kept) < len(rows):
        logger.info("Dropped %d empty %s rows of %d", len(rows) - len(kept), split, len(rows))
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        limit = max_length - 1 if eos is not None else max_length
        encoded = tokenizer([str(text) for text in batch[text_column]], truncation=True, max_length=limit)
        if eos is not None:
            encoded["input_ids"] = [ids + [eos] for ids in encoded["input_ids"]]
            encoded["attention_mask"] = [mask + [1] for mask in encoded["attention_mask"]]
        encoded["labels"] = [list(ids) for ids in encoded["input_ids"]]
        return encoded

    encoded = kept.map(encode, batched=True, remove_columns=kept.column_names, desc=f"Tokenizing {split} rows")
    return _require_rows(encoded, split, text_column)


def encode_chat(
    rows: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    column: str,
    max_length: int,
    assistant_only: bool,
    split: str,
) -> Dataset:
    """Format conversations with the tokenizer's chat template and tokenize them.

    With ``assistant_only``, labels outside the assistant messages are set to -100, so
    the loss covers only what the assistant says. Rows left with no labelled token after
    truncation to ``max_length`` are dropped.

    Raises:
        TrainingConfigError: The tokenizer has no chat template, a row is not a list of
            messages, or the template renders earlier turns differently once later turns follow.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingConfigError(
            f"Column {column!r} holds chat messages but the tokenizer has no chat template; "
            "use a chat model's tokenizer or put plain text in the column."
        )

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        messages = _checked_messages(row[column], column)
        input_ids, labels = _chat_tokens(tokenizer, messages, assistant_only)
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}

    encoded = rows.map(encode, remove_columns=rows.column_names, desc=f"Formatting {split} chats")
    kept = encoded.filter(lambda row: any(label != IGNORE_INDEX for label in row["labels"]))
    if len(kept) < len(encoded):
        logger.warning(
            "Dropped %d of %d %s conversations with no assistant token within --max-length %d",
            len(encoded) - len(kept), len(encoded), split, max_length,
        )
    return _require_rows(kept, split, column)


def _checked_messages(value: Any, column: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "role" in m for m in value):
        raise TrainingConfigError(
            f"Column {column!r} holds {str(value)[:80]!r}, not a list of chat messages with 'role' and 'content'."
        )
    return [{"role": m["role"], "content": m.get("content") or ""} for m in value]


def _chat_tokens(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], assistant_only: bool
) -> tuple[list[int], list[int]]:
    def tokens(conversation: list[dict[str, Any]], generation_prompt: bool = False) -> list[int]:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    input_ids = tokens(messages)
    if not assistant_only:
        return input_ids, list(input_ids)
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokens(messages[:index], generation_prompt=True)
        through = tokens(messages[: index + 1])
        start = len(prompt)
        if input_ids[:start] != prompt or input_ids[: len(through)] != through or start > len(through):
            raise TrainingConfigError(
                "The tokenizer's chat template renders earlier turns differently once later turns follow, "
                "so the assistant tokens cannot be located; train without --assistant-only-loss."
            )
        labels[start : len(through)] = input_ids[start : len(through)]
    return input_ids, labels


def _require_rows(rows: Dataset, split: str, column: str) -> Dataset:
    if len(rows) == 0:
        raise TrainingConfigError(f"No {split} rows are left with text in column {column!r}; nothing to train on.")
    return rows


@dataclass
class CausalLMCollator:
    """Pad ``input_ids`` with the pad token, ``attention_mask`` with 0 and ``labels`` with -100 (right side)."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for feature in features:
            padding = length - len(feature["input_ids"])
            batch["input_ids"].append(list(feature["input_ids"]) + [self.pad_token_id] * padding)
            batch["attention_mask"].append(list(feature["attention_mask"]) + [0] * padding)
            batch["labels"].append(list(feature["labels"]) + [IGNORE_INDEX] * padding)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
