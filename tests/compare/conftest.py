"""Adapter folders for the compare tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "combine"))  # for combine_factories

from combine_factories import make_adapter, tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def compare_adapters_folders(tmp_path_factory):
    """Name -> adapter folder: two unrelated adapters and one with a partly shared module set."""
    root = tmp_path_factory.mktemp("compare_adapters")
    specs = {
        "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        "vo": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["v_proj", "o_proj"]),
        "qv2": dict(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"]),
    }
    return {
        name: make_adapter(tiny_llama, root / name, seed=index, **kwargs)
        for index, (name, kwargs) in enumerate(specs.items(), start=1)
    }
