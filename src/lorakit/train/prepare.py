"""Preparing a run's data: load, split, find the columns, map labels and tokenize."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from lorakit.errors import TrainingConfigError
from lorakit.train import data, tokenization
from lorakit.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenized rows and what was learned about the columns on the way.

    Attributes:
        train: Rows with ``input_ids``, ``attention_mask`` and ``labels``.
        eval: The same for evaluation, or ``None`` without evaluation.
        text_column: The column read as text (or chat messages).
        label_column: The label column (seq-cls only).
        label_names: Class names in id order (seq-cls only).
        is_chat: The text column holds chat conversations.
        description: Where the rows came from, for logs and the model card.
    """

    train: Dataset
    eval: Dataset | None
    text_column: str
    label_column: str | None
    label_names: list[str] | None
    is_chat: bool
    description: str


def prepare_data(config: TrainConfig, tokenizer: Any) -> PreparedData:
    """Load ``config.dataset`` and turn it into tokenized training and evaluation rows.

    Raises:
        TrainingConfigError: The dataset cannot be loaded, is empty, lacks a column, or
            has rows without labels.
    """
    splits = data.choose_splits(data.load_rows(config.dataset or "", config.dataset_config_name), config)
    columns = list(splits.train.column_names)
    if config.task == "seq-cls":
        return _prepare_classification(config, tokenizer, splits, columns)
    text_column = data.find_column(
        columns, config.text_column, data.CHAT_COLUMNS + data.TEXT_COLUMNS, "--text-column", "text or chat"
    )
    is_chat = data.is_chat_column(splits.train, text_column)
    if config.assistant_only_loss and not is_chat:
        logger.warning("--assistant-only-loss applies to chat rows; column %r holds plain text", text_column)

    def encode(rows: Dataset, split: str) -> Dataset:
        if is_chat:
            return tokenization.encode_chat(
                rows, tokenizer, text_column, config.max_length, config.assistant_only_loss, split
            )
        return tokenization.encode_text(rows, tokenizer, text_column, config.max_length, split)

    return PreparedData(
        train=encode(splits.train, "training"),
        eval=encode(splits.eval, "evaluation") if splits.eval is not None else None,
        text_column=text_column,
        label_column=None,
        label_names=None,
        is_chat=is_chat,
        description=splits.description,
    )


def _prepare_classification(config: TrainConfig, tokenizer: Any, splits: data.Splits, columns: list[str]) -> PreparedData:
    text_column = data.find_column(columns, config.text_column, data.TEXT_COLUMNS, "--text-column", "text")
    label_column = data.find_column(columns, config.label_column, data.LABEL_COLUMNS, "--label-column", "label")
    if label_column == text_column:
        raise TrainingConfigError(
            f"Column {text_column!r} was chosen as both the text and the label column; "
            "pass --text-column and --label-column."
        )
    parts = {"training": splits.train}
    if splits.eval is not None:
        parts["evaluation"] = splits.eval
        _require_column(splits.eval, text_column, "--text-column")
        _require_column(splits.eval, label_column, "--label-column")
    names = data.label_names(parts, label_column)
    logger.info("Classes (%d): %s", len(names), ", ".join(names))

    def encode(rows: Dataset, split: str) -> Dataset:
        return tokenization.encode_classification(
            rows, tokenizer, text_column, label_column, names, config.max_length, split
        )

    return PreparedData(
        train=encode(splits.train, "training"),
        eval=encode(splits.eval, "evaluation") if splits.eval is not None else None,
        text_column=text_column,
        label_column=label_column,
        label_names=names,
        is_chat=False,
        description=splits.description,
    )


def _require_column(rows: Dataset, column: str, flag: str) -> None:
    if column not in rows.column_names:
        raise TrainingConfigError(
            f"Column {column!r} ({flag}) is in the training rows but not in the evaluation rows, whose columns "
            f"are: {', '.join(rows.column_names)}. Pass an --eval-split with the same columns."
        )
