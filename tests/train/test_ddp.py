"""Data-parallel training: ``lorakit train`` under torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lorakit.runtime import MultiAdapterModel


def test_two_cpu_processes_train_one_adapter(tiny_llama_dir, chats_jsonl, tmp_path):
    out = tmp_path / "ddp"
    lorakit = shutil.which("lorakit", path=os.path.dirname(sys.executable))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", lorakit, "train",
        "--model", str(tiny_llama_dir), "--dataset", str(chats_jsonl), "--task", "causal-lm", "--output", str(out),
        # torchrun would read "--r" as an abbreviation of one of its own options.
        "--lora-r", "4", "--epochs", "1", "--batch-size", "4", "--validation-size", "8", "--quiet",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("Adapter written to") == 1, "only the first process reports and writes"

    metrics = json.loads((out / "metrics.json").read_text())
    # 32 training rows, 4 per process and step, 2 processes: 4 optimizer steps (8 for one process).
    assert metrics["train"]["global_step"] == 4
    assert metrics["train_rows"] == 32

    tokens = torch.tensor([[1, 20, 21, 22, 2]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), out).eval()
    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval())
    runtime.load_adapter(out, "ddp")
    runtime.activate("ddp")
    with torch.no_grad():
        torch.testing.assert_close(runtime.model(input_ids=tokens).logits, peft_model(input_ids=tokens).logits,
                                   rtol=1e-5, atol=1e-6)
    lora_B = [p for name, p in peft_model.named_parameters() if "lora_B" in name]
    assert all(p.abs().sum() > 0 for p in lora_B), "training changed every lora_B from its zero init"
