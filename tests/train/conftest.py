"""Fixtures for the training tests: tiny model folders and small data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import chat_rows, review_rows, save_tiny_bert, save_tiny_llama, write_csv, write_jsonl


@pytest.fixture(autouse=True)
def _offline_and_private_cache(tmp_path_factory, monkeypatch):
    """Keep the hub offline and the Arrow caches that datasets writes for local files out of the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "datasets-cache"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def reviews_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", review_rows(64))


@pytest.fixture
def chats_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chats.jsonl", chat_rows(40))
