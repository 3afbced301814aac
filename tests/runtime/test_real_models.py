"""The runtime on the packaged real models (MiniLM, SmolLM2) against PEFT."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lorakit import MultiAdapterModel
from lorakit.assets import asset_path, smollm2_path

pytestmark = pytest.mark.real

SENTENCES = [
    "A gorgeous, witty film that never forgets its heart.",
    "Two hours of my life I will never get back.",
    "The plot is thin but the performances carry it.",
    "@united lost my bag again, worst airline ever",
]


def save_random_adapter(model, path, seed, **lora_kwargs):
    peft_model = get_peft_model(model, LoraConfig(**lora_kwargs))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * parameter.detach().std().clamp(min=0.02))
    peft_model.save_pretrained(path)


def minilm():
    torch.manual_seed(0)  # the classifier head is new; make it the same in every copy
    return AutoModelForSequenceClassification.from_pretrained(asset_path("minilm"), num_labels=2).eval()


@pytest.fixture(scope="module")
def minilm_adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    save_random_adapter(minilm(), root / "a", 1, task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"])
    save_random_adapter(minilm(), root / "b", 2, task_type="SEQ_CLS", r=4, lora_alpha=4, target_modules=["key", "dense"], use_rslora=True)
    return root


def test_minilm_routed_and_merged_match_peft(minilm_adapters):
    tokenizer = AutoTokenizer.from_pretrained(asset_path("minilm"))
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = PeftModel.from_pretrained(minilm(), minilm_adapters / "a", adapter_name="a")
    reference.load_adapter(minilm_adapters / "b", adapter_name="b")
    reference.eval()
    runtime = MultiAdapterModel(minilm())
    runtime.load_adapter(minilm_adapters / "a", "a")
    runtime.load_adapter(minilm_adapters / "b", "b")
    rows = ["a", "b", None, "b"]
    with torch.no_grad():
        expected = reference(**inputs, adapter_names=["a", "b", "__base__", "b"]).logits
        routed = runtime(**inputs, adapter_names=rows).logits
    torch.testing.assert_close(routed, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(routed[0], routed[2], atol=1e-3)
    runtime.merge("b")
    reference.set_adapter("b")
    with torch.no_grad():
        merged = runtime(**inputs).logits
        expected_b = reference(**inputs).logits
    torch.testing.assert_close(merged, expected_b, rtol=1e-4, atol=1e-4)


def test_smollm2_routed_generation_matches_each_row_alone(tmp_path):
    folder = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    save_random_adapter(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "a", 1, r=8, target_modules=["q_proj", "v_proj"])
    save_random_adapter(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "b", 2, r=4, target_modules=["o_proj"])
    runtime = MultiAdapterModel(AutoModelForCausalLM.from_pretrained(folder).eval())
    runtime.load_adapter(tmp_path / "a", "a")
    runtime.load_adapter(tmp_path / "b", "b")
    prompts = ["The capital of France is", "Once upon a time", "My favourite food is"]
    rows = ["a", None, {"a": 0.5, "b": 0.5}]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    inputs = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        routed = runtime.generate(**inputs, adapter_names=rows, **settings)
        for row, spec in enumerate(rows):
            runtime.activate(spec)
            single_inputs = tokenizer(prompts[row : row + 1], return_tensors="pt")
            single = runtime.generate(**single_inputs, **settings)
            new_routed = routed[row, inputs["input_ids"].shape[1] :]
            new_single = single[0, single_inputs["input_ids"].shape[1] :]
            assert new_routed.tolist() == new_single.tolist(), f"row {row} ({spec})"
    runtime.activate(None)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "a").eval()
    with torch.no_grad():
        expected = reference(**inputs).logits
        ours = runtime(**inputs, adapter_names=["a"] * 3).logits
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
