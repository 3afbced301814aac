import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # for tests/factories.py


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory):
    """A session folder of PEFT adapters for the tiny models, built once."""
    from factories import make_peft_adapter

    root = tmp_path_factory.mktemp("adapters")
    specs = {
        "llama_qv": ("llama", 1, {}),
        "llama_vo": ("llama", 2, {"target_modules": ["v_proj", "o_proj"], "r": 8, "use_rslora": True}),
        "llama_regex": ("llama", 3, {"target_modules": r".*\.(q_proj|k_proj)", "r": 2, "lora_alpha": 4}),
        "llama_pattern": ("llama", 4, {"target_modules": ["q_proj", "v_proj", "down_proj"], "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"down_proj": 3}}),
        "llama_head": ("llama", 5, {"modules_to_save": ["lm_head"]}),
        "llama_head2": ("llama", 6, {"target_modules": ["o_proj"], "modules_to_save": ["lm_head"]}),
        "llama_embed": ("llama", 7, {"target_modules": ["embed_tokens", "q_proj"]}),
        "bert_a": ("bert", 11, {}),
        "bert_b": ("bert", 12, {"target_modules": ["key", "dense"], "r": 2}),
        "bert_bias": ("bert", 13, {"lora_bias": True}),
        "bert_nohead": ("bert", 14, {"task_type": None}),
        "gpt2_a": ("gpt2", 21, {}),
        "gpt2_b": ("gpt2", 22, {"target_modules": ["c_attn"], "r": 8}),
    }
    for name, (kind, seed, kwargs) in specs.items():
        make_peft_adapter(kind, root / name, seed, **kwargs)
    return root
