"""What ``import lorakit`` pulls in: loading and routing adapters needs no PEFT import."""

import subprocess
import sys

from factories import TINY_LLAMA_CONFIG


def test_import_leaves_peft_unloaded():
    code = "import sys, lorakit; print(sorted(name for name in sys.modules if name.split('.')[0] == 'peft'))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_loading_adapters_leaves_peft_unloaded(adapter_dir):
    code = (
        "import sys, torch, lorakit\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        f"config = LlamaConfig(**{TINY_LLAMA_CONFIG!r})\n"  # not tiny_llama(): factories imports peft
        "runtime = lorakit.MultiAdapterModel(LlamaForCausalLM(config))\n"
        f"runtime.load_adapters([{str(adapter_dir / 'llama_qv')!r}, {str(adapter_dir / 'llama_vo')!r}])\n"
        "runtime.activate('llama_qv')\n"
        "runtime(torch.tensor([[1, 5, 7]]))\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'peft'))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_patterns_still_resolve_after_lazy_import():
    from lorakit.adapters.config import module_rank_and_alpha

    config = {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"model.layers.0.v_proj": 2}}
    assert module_rank_and_alpha(config, "model.layers.0.self_attn.q_proj") == (4, 16.0)
    assert module_rank_and_alpha(config, "model.layers.0.v_proj") == (8, 2.0)
    assert module_rank_and_alpha(config, "model.layers.1.self_attn.k_proj") == (8, 16.0)
    assert module_rank_and_alpha({"r": 8, "lora_alpha": 16}, "model.layers.0.self_attn.q_proj") == (8, 16.0)
