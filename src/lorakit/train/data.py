"""Loading training rows: local files, ``save_to_disk`` folders or hub datasets; splits, columns and labels."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict

from lorakit.errors import TrainingConfigError
from lorakit.train.config import DEFAULT_VALIDATION_SIZE, TrainConfig

logger = logging.getLogger(__name__)

# File suffix -> datasets builder. Compressed files (.gz, .bz2, ...) are read through.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")

# Column names tried in order when --text-column / --label-column are not given.
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "input", "prompt", "question")
CHAT_COLUMNS = ("messages", "conversations", "conversation", "chat")
LABEL_COLUMNS = ("label", "labels", "category", "sentiment", "class", "target", "intent")


@dataclass
class Splits:
    """The raw rows to train and evaluate on, and where they came from."""

    train: Dataset
    eval: Dataset | None
    description: str


def load_rows(spec: str, config_name: str | None = None) -> DatasetDict:
    """Load a dataset from a local file or folder, or from the hub.

    Args:
        spec: A csv/tsv/json/jsonl/parquet/txt file (optionally compressed), a folder
            written by ``save_to_disk``, a folder of such data files, or a hub name.
        config_name: The hub dataset's configuration (subset) name.

    Returns:
        The splits; a single file or a saved ``Dataset`` becomes the ``train`` split.

    Raises:
        TrainingConfigError: The file type is unknown, the file cannot be parsed, or the
            hub cannot be reached or has no such dataset.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return _load_file(path)
    if _looks_like_path(spec):
        raise TrainingConfigError(f"Dataset file {spec!r} not found. Check the --dataset path.")
    return _load_from_hub(spec, config_name)


def _looks_like_path(spec: str) -> bool:
    """Tell whether ``spec`` must be a local path: a hub name is ``name`` or ``owner/name`` without a data-file suffix."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or _builder_for(Path(spec)) is not None


def _builder_for(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return _BUILDERS.get(suffixes[-1]) if suffixes else None


def _load_file(path: Path) -> DatasetDict:
    builder = _builder_for(path)
    if builder is None:
        raise TrainingConfigError(
            f"Cannot tell the format of dataset file {str(path)!r} from its name; "
            f"expected one of {', '.join(_BUILDERS)} (optionally with {', '.join(_COMPRESSIONS)})."
        )
    options: dict[str, Any] = {"sep": "\t"} if ".tsv" in [s.lower() for s in path.suffixes] else {}
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        if "corresponds to no data" in str(cause):  # datasets 5.2's message for a file without rows
            raise TrainingConfigError(f"Dataset file {str(path)!r} has no rows; nothing to train on.") from err
        raise TrainingConfigError(f"Cannot read dataset file {str(path)!r} as {builder}: {cause}") from err


def _load_folder(path: Path) -> DatasetDict:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    try:
        return datasets.load_dataset(str(path))
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        raise TrainingConfigError(
            f"Folder {str(path)!r} is neither a save_to_disk folder nor a folder of data files datasets can read: {err}"
        ) from err


def _load_from_hub(name: str, config_name: str | None) -> DatasetDict:
    try:
        loaded = datasets.load_dataset(name, config_name)
    except (ConnectionError, FileNotFoundError) as err:
        raise TrainingConfigError(
            f"Cannot load dataset {name!r} from the Hugging Face hub: {err}. It is not a local file or folder "
            "either. Without network access, pass a local csv, json, jsonl, parquet or txt file, "
            "or a folder written by save_to_disk."
        ) from err
    except ValueError as err:  # e.g. a missing or unknown configuration name
        raise TrainingConfigError(f"Cannot load dataset {name!r}: {err}") from err
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    return loaded


def choose_splits(splits: DatasetDict, config: TrainConfig) -> Splits:
    """Pick the training and evaluation rows: named splits, a held-out part, and ``--limit``.

    Raises:
        TrainingConfigError: A split is missing or empty, or the held-out size leaves no training rows.
    """
    train_name = _split_name(splits, config.train_split, "--train-split")
    train = splits[train_name]
    if len(train) == 0:
        raise TrainingConfigError(f"Split {train_name!r} of dataset {config.dataset!r} has no rows; nothing to train on.")
    eval_rows, how = _eval_rows(splits, train_name, config)
    if how == "held out":
        train, eval_rows = _hold_out(train, config)
    if config.limit is not None and config.limit < len(train):
        train = train.shuffle(seed=config.seed).select(range(config.limit))
    description = f"{len(train)} training rows from split {train_name!r}"
    if eval_rows is not None:
        description += f", {len(eval_rows)} evaluation rows ({how})"
    logger.info("Dataset %s: %s", config.dataset, description)
    return Splits(train=train, eval=eval_rows, description=description)


def _split_name(splits: DatasetDict, name: str, flag: str) -> str:
    if name in splits:
        return name
    if flag == "--train-split" and name == "train" and len(splits) == 1:
        return next(iter(splits))
    raise TrainingConfigError(f"Split {name!r} ({flag}) not found; the dataset has splits: {', '.join(splits)}.")


def _eval_rows(splits: DatasetDict, train_name: str, config: TrainConfig) -> tuple[Dataset | None, str]:
    if config.eval_split:
        name = _split_name(splits, config.eval_split, "--eval-split")
        if name == train_name:
            raise TrainingConfigError(
                f"--eval-split {name!r} is also the training split; pass another split or use --validation-size."
            )
        return _non_empty(splits[name], name), f"split {name!r}"
    if config.validation_size is None and "validation" in splits and train_name != "validation":
        return _non_empty(splits["validation"], "validation"), "split 'validation'"
    if config.validation_size == 0:
        return None, "none"
    return None, "held out"


def _non_empty(rows: Dataset, name: str) -> Dataset:
    if len(rows) == 0:
        raise TrainingConfigError(f"Evaluation split {name!r} has no rows; pass another --eval-split.")
    return rows


def _hold_out(train: Dataset, config: TrainConfig) -> tuple[Dataset, Dataset]:
    size = DEFAULT_VALIDATION_SIZE if config.validation_size is None else config.validation_size
    test_size: float | int = int(size) if size >= 1 else size
    held = int(test_size) if isinstance(test_size, int) else math.ceil(test_size * len(train))
    if held >= len(train) or held < 1:
        raise TrainingConfigError(
            f"--validation-size {size} holds out {held} of the {len(train)} rows, leaving "
            f"{'no training rows' if held >= len(train) else 'no evaluation rows'}; pass a smaller or larger value "
            "or --validation-size 0 to skip evaluation."
        )
    parts = train.train_test_split(test_size=test_size, seed=config.seed, shuffle=True)
    return parts["train"], parts["test"]


def find_column(columns: list[str], explicit: str | None, candidates: tuple[str, ...], flag: str, what: str) -> str:
    """Return ``explicit`` if it is a column, else the first candidate present (case-insensitive).

    Raises:
        TrainingConfigError: The named column does not exist, or no candidate does;
            the message lists the dataset's columns.
    """
    if explicit is not None:
        if explicit not in columns:
            raise TrainingConfigError(
                f"Column {explicit!r} ({flag}) not found in the dataset; its columns are: {', '.join(columns)}."
            )
        return explicit
    by_lower = {column.lower(): column for column in columns}
    for candidate in candidates:
        if candidate in by_lower:
            return by_lower[candidate]
    raise TrainingConfigError(
        f"Found no {what} column among the dataset's columns ({', '.join(columns)}); "
        f"expected one of {', '.join(candidates)}. Pass {flag} NAME."
    )


def is_chat_column(rows: Dataset, column: str) -> bool:
    """Tell whether ``column`` holds chat conversations (lists of ``{"role", "content"}`` messages)."""
    for value in rows[column][:20]:
        if value is None:
            continue
        return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]
    return False


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def check_no_missing(rows: Dataset, column: str, split: str, flag: str) -> None:
    """Raise if some rows have no value (None, NaN or blank) in ``column``.

    Raises:
        TrainingConfigError: Naming the number of such rows and the first row numbers.
    """
    missing = [index for index, value in enumerate(rows[column]) if _missing(value)]
    if missing:
        shown = ", ".join(str(index) for index in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise TrainingConfigError(
            f"Column {column!r} ({flag}) is empty in {len(missing)} of {len(rows)} {split} rows "
            f"(rows {shown}); remove those rows or fill them in."
        )


def label_names(parts: dict[str, Dataset], column: str) -> list[str]:
    """Return the class names in id order, from a ``ClassLabel`` feature or the sorted distinct values.

    Integer labels keep their numeric order (``0, 1, 2``); strings sort alphabetically.

    Raises:
        TrainingConfigError: Labels are missing, are non-integral numbers, or there is only one class.
    """
    first = next(iter(parts.values()))
    feature = first.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values: set[Any] = set()
    for split, rows in parts.items():
        check_no_missing(rows, column, split, "--label-column")
        values.update(label_key(value, column) for value in rows[column])
    if len(values) < 2:
        raise TrainingConfigError(
            f"Column {column!r} (--label-column) has only the label {sorted(map(str, values))}; "
            "classification needs at least two classes."
        )
    if all(isinstance(value, int) for value in values):
        return [str(value) for value in sorted(values)]
    return sorted(str(value) for value in values)


def label_key(value: Any, column: str) -> str | int:
    """Normalise one label: integers (and integral floats) stay integers, everything else becomes a string.

    Raises:
        TrainingConfigError: ``value`` is a float with a fractional part (a regression target).
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise TrainingConfigError(
                f"Column {column!r} (--label-column) holds the non-integer value {value}; "
                "seq-cls needs class labels (strings or integers), not regression targets."
            )
        return int(value)
    if isinstance(value, int):
        return value
    return str(value).strip()
