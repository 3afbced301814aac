"""Base model folders and adapters for the merge tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "combine"))  # for combine_factories

from combine_factories import make_adapter, tiny_bert, tiny_gpt2, tiny_llama  # noqa: E402

FACTORIES = {"llama": tiny_llama, "bert": tiny_bert, "gpt2": tiny_gpt2}


@pytest.fixture(scope="session")
def base_folders(tmp_path_factory):
    """Kind -> a saved tiny base model folder."""
    root = tmp_path_factory.mktemp("merge_bases")
    folders = {}
    for kind, factory in FACTORIES.items():
        folders[kind] = root / kind
        factory().save_pretrained(folders[kind])
    return folders


@pytest.fixture(scope="session")
def merge_adapters(tmp_path_factory):
    """Name -> a PEFT adapter folder with random non-zero factors."""
    root = tmp_path_factory.mktemp("merge_adapters")
    specs = {
        "llama_qv": (tiny_llama, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")),
        "llama_head": (tiny_llama, dict(
            r=8, lora_alpha=16, use_rslora=True, target_modules=["v_proj", "o_proj", "embed_tokens"],
            modules_to_save=["lm_head"], task_type="CAUSAL_LM",
        )),
        "bert_bias": (tiny_bert, dict(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], lora_bias=True, task_type="SEQ_CLS")),
        "gpt2": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, task_type="CAUSAL_LM")),
    }
    return {
        name: make_adapter(factory, root / name, seed=index, **kwargs)
        for index, (name, (factory, kwargs)) in enumerate(specs.items(), start=1)
    }
