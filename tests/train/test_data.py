"""Loading training data: file formats, splits, column detection, labels and bad input."""

from __future__ import annotations

import bz2
import json

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lorakit.errors import TrainingConfigError
from lorakit.train.config import TrainConfig
from lorakit.train.data import choose_splits, label_names, load_rows
from lorakit.train.prepare import prepare_data

from .helpers import bert_tokenizer, review_rows, write_csv, write_jsonl

ROWS = review_rows(20)


def _config(dataset, **changes) -> TrainConfig:
    settings = dict(model="m", dataset=str(dataset), task="seq-cls", output="out", validation_size=0)
    settings.update(changes)
    return TrainConfig(**settings)


def _write(tmp_path, name: str):
    path = tmp_path / name
    if name.endswith(".csv"):
        write_csv(path, ROWS)
    elif name.endswith(".tsv"):
        path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS))
    elif name.endswith(".jsonl"):
        write_jsonl(path, ROWS)
    elif name.endswith(".json"):
        path.write_text(json.dumps(ROWS))
    elif name.endswith(".parquet"):
        Dataset.from_list(ROWS).to_parquet(str(path))
    elif name.endswith(".csv.bz2"):
        with bz2.open(path, "wt", encoding="utf-8") as handle:
            handle.write("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    return path


@pytest.mark.parametrize("name", ["reviews.csv", "reviews.tsv", "reviews.json", "reviews.jsonl", "reviews.parquet", "reviews.csv.bz2"])
def test_local_formats_load(tmp_path, name):
    loaded = load_rows(str(_write(tmp_path, name)))
    assert list(loaded) == ["train"]
    assert loaded["train"].num_rows == len(ROWS)
    assert loaded["train"]["text"][0] == ROWS[0]["text"]
    assert loaded["train"]["label"][3] == ROWS[3]["label"]


def test_txt_file_one_row_per_line(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text("To be, or not to be\n\nthat is the question\n")
    rows = load_rows(str(path))["train"]
    assert rows["text"] == ["To be, or not to be", "", "that is the question"]


def test_save_to_disk_folder_uses_validation_split(tmp_path):
    folder = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(ROWS[:15]), "validation": Dataset.from_list(ROWS[15:])}).save_to_disk(str(folder))
    splits = choose_splits(load_rows(str(folder)), _config(folder, validation_size=None))
    assert splits.train.num_rows == 15
    assert splits.eval.num_rows == 5
    assert "split 'validation'" in splits.description


def test_single_saved_dataset_becomes_train(tmp_path):
    folder = tmp_path / "saved"
    Dataset.from_list(ROWS).save_to_disk(str(folder))
    assert load_rows(str(folder))["train"].num_rows == len(ROWS)


def test_hub_name_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(TrainingConfigError) as raised:
        load_rows("lorakit-tests/no-such-dataset")
    message = str(raised.value)
    assert "Cannot load dataset 'lorakit-tests/no-such-dataset' from the Hugging Face hub" in message
    assert "pass a local csv, json, jsonl, parquet or txt file" in message


def test_missing_local_file(tmp_path):
    with pytest.raises(TrainingConfigError, match=r"Dataset file '.*absent\.csv' not found"):
        load_rows(str(tmp_path / "absent.csv"))


def test_unknown_file_format(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"not a table")
    with pytest.raises(TrainingConfigError, match="Cannot tell the format of dataset file"):
        load_rows(str(path))


def test_unparsable_json_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(TrainingConfigError, match="Cannot read dataset file .* as json"):
        load_rows(str(path))


def test_eval_split_missing_lists_splits(tmp_path):
    folder = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS)}).save_to_disk(str(folder))
    with pytest.raises(TrainingConfigError, match=r"Split 'dev' \(--eval-split\) not found; the dataset has splits: train, test"):
        choose_splits(load_rows(str(folder)), _config(folder, eval_split="dev", validation_size=None))


def test_held_out_rows_and_limit(tmp_path):
    rows = load_rows(str(_write(tmp_path, "reviews.csv")))
    splits = choose_splits(rows, _config("x.csv", validation_size=4, limit=10))
    assert splits.eval.num_rows == 4
    assert splits.train.num_rows == 10
    held_out = set(splits.eval["text"])
    assert not held_out & set(splits.train["text"])


def test_held_out_fraction_rounds_up(tmp_path):
    rows = load_rows(str(_write(tmp_path, "reviews.csv")))
    splits = choose_splits(rows, _config("x.csv", validation_size=0.12))
    assert splits.eval.num_rows == 3  # 12% of 20 rows is 2.4


def test_held_out_rows_same_for_same_seed(tmp_path):
    rows = load_rows(str(_write(tmp_path, "reviews.csv")))
    first = choose_splits(rows, _config("x.csv", validation_size=5, seed=3))
    second = choose_splits(rows, _config("x.csv", validation_size=5, seed=3))
    assert first.eval["text"] == second.eval["text"]


def test_validation_size_leaving_nothing(tmp_path):
    rows = load_rows(str(_write(tmp_path, "reviews.csv")))
    with pytest.raises(TrainingConfigError, match="holds out 20 of the 20 rows, leaving no training rows"):
        choose_splits(rows, _config("x.csv", validation_size=20))


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(TrainingConfigError, match="has no rows; nothing to train on"):
        choose_splits(load_rows(str(path)), _config(path))


def test_columns_found_by_common_names(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"id": i, "Sentence": r["text"], "sentiment": r["label"]} for i, r in enumerate(ROWS)])
    prepared = prepare_data(_config(path), bert_tokenizer())
    assert prepared.text_column == "Sentence"
    assert prepared.label_column == "sentiment"
    assert prepared.label_names == ["neg", "pos"]


def test_unknown_column_lists_columns(tmp_path):
    path = _write(tmp_path, "reviews.csv")
    with pytest.raises(TrainingConfigError) as raised:
        prepare_data(_config(path, text_column="review_body"), bert_tokenizer())
    assert "Column 'review_body' (--text-column) not found in the dataset; its columns are: text, label." in str(raised.value)


def test_no_label_column_found(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"text": r["text"], "verdict": r["label"]} for r in ROWS])
    with pytest.raises(TrainingConfigError) as raised:
        prepare_data(_config(path), bert_tokenizer())
    message = str(raised.value)
    assert "Found no label column among the dataset's columns (text, verdict)" in message
    assert "Pass --label-column NAME" in message


def test_labels_missing_in_some_rows(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["label"] = ""
    rows[7]["label"] = ""
    path = write_csv(tmp_path / "r.csv", rows)
    with pytest.raises(TrainingConfigError) as raised:
        prepare_data(_config(path), bert_tokenizer())
    assert "Column 'label' (--label-column) is empty in 2 of 20 training rows (rows 2, 7)" in str(raised.value)


def test_texts_missing_in_some_rows(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[4]["text"] = ""
    path = write_csv(tmp_path / "r.csv", rows)
    with pytest.raises(TrainingConfigError, match=r"Column 'text' \(--text-column\) is empty in 1 of 20 training rows \(rows 4\)"):
        prepare_data(_config(path), bert_tokenizer())


def test_integer_labels_keep_numeric_order():
    rows = Dataset.from_dict({"label": [10, 2, 2, 1]})
    assert label_names({"training": rows}, "label") == ["1", "2", "10"]


def test_string_labels_sorted_and_mapped(tmp_path):
    path = write_csv(tmp_path / "r.csv", [{"text": "good", "label": name} for name in ["rotten", "fresh", "plot", "fresh"]])
    prepared = prepare_data(_config(path), bert_tokenizer())
    assert prepared.label_names == ["fresh", "plot", "rotten"]
    assert prepared.train["labels"] == [2, 0, 1, 0]


def test_class_label_feature_names_kept():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "neu", "pos"])})
    rows = Dataset.from_dict({"text": ["a", "b"], "label": [2, 0]}, features=features)
    assert label_names({"training": rows}, "label") == ["neg", "neu", "pos"]


def test_single_class_rejected():
    rows = Dataset.from_dict({"label": ["pos", "pos"]})
    with pytest.raises(TrainingConfigError, match="classification needs at least two classes"):
        label_names({"training": rows}, "label")


def test_fractional_labels_rejected():
    rows = Dataset.from_dict({"label": [0.5, 1.0]})
    with pytest.raises(TrainingConfigError, match="non-integer value 0.5; seq-cls needs class labels"):
        label_names({"training": rows}, "label")


def test_eval_labels_join_the_classes(tmp_path):
    folder = tmp_path / "saved"
    train = Dataset.from_dict({"text": ["good", "bad"], "label": ["pos", "neg"]})
    validation = Dataset.from_dict({"text": ["fun"], "label": ["mixed"]})
    DatasetDict({"train": train, "validation": validation}).save_to_disk(str(folder))
    prepared = prepare_data(_config(folder, validation_size=None), bert_tokenizer())
    assert prepared.label_names == ["mixed", "neg", "pos"]
    assert prepared.eval["labels"] == [0]
