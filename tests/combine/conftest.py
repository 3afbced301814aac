"""Adapter folders for the combine tests, built once per session on tiny models."""

from __future__ import annotations

import pytest
from combine_factories import make_adapter, tiny_bert, tiny_gpt2, tiny_llama

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]

LLAMA_ADAPTERS = {
    "qv": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "vo_rslora": dict(r=8, lora_alpha=16, use_rslora=True, target_modules=["v_proj", "o_proj"]),
    "pattern": dict(
        r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"],
        rank_pattern={"down_proj": 6}, alpha_pattern={"q_proj": 3},
    ),
    "embed": dict(r=4, lora_alpha=4, target_modules=["embed_tokens", "q_proj"]),
    "head": dict(r=2, lora_alpha=2, target_modules=["o_proj"], modules_to_save=["lm_head"]),
    "head2": dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    # Per-module ranks that differ between two adapters on the same module.
    "q_rank4": dict(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 4}),
    "q_rank8": dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 8}),
}
BERT_ADAPTERS = {
    "bert_a": dict(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"),
    "bert_b": dict(r=2, lora_alpha=2, target_modules=["key", "value"], task_type="SEQ_CLS"),
    "bert_bias": dict(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], lora_bias=True, task_type="SEQ_CLS"),
}
GPT2_ADAPTERS = {
    "gpt2": dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
}


@pytest.fixture(scope="session")
def adapters(tmp_path_factory):
    """Name -> folder of a PEFT adapter with random non-zero factors."""
    root = tmp_path_factory.mktemp("combine_adapters")
    folders = {}
    groups = ((tiny_llama, LLAMA_ADAPTERS), (tiny_bert, BERT_ADAPTERS), (tiny_gpt2, GPT2_ADAPTERS))
    seed = 0
    for factory, specs in groups:
        for name, kwargs in specs.items():
            seed += 1
            folders[name] = make_adapter(factory, root / name, seed=seed, **kwargs)
    return folders
