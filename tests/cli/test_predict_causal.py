"""``lorakit predict`` with causal-LM adapters on the packaged SmolLM2."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lorakit import MultiAdapterModel
from lorakit.assets import smollm2_path

pytestmark = pytest.mark.real


def test_predict_generates_per_row(run_cli, tmp_path):
    folder = smollm2_path()
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, parameter in peft_model.named_parameters():
            if "lora_B" in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(tmp_path / "style")
    rows = [{"text": "What is the capital of France?", "adapter": None}, {"text": "Tell me about cats.", "adapter": "style"}]
    input_path = tmp_path / "rows.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli(
        "--quiet", "predict", "--model", "smollm2", "--adapter", f"style={tmp_path / 'style'}",
        "--input", input_path, "--max-new-tokens", 8, "--chat",
    )
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(folder).eval())
    runtime.load_adapter(tmp_path / "style", "style")
    for row, result in zip(rows, results):
        runtime.activate(row["adapter"])
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["text"]}], tokenize=False, add_generation_prompt=True)
        inputs = tokenizer([prompt], return_tensors="pt")
        with torch.no_grad():
            output = runtime.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        assert result["generated"] == expected
    assert "Paris" in results[0]["generated"]
