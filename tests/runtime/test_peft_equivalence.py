"""The runtime gives PEFT 0.21's outputs on the same adapter folders."""

import pytest
import torch
from factories import MODEL_BUILDERS, token_batch
from peft import PeftModel

from lorakit import MultiAdapterModel

CASES = {
    "llama": ["llama_qv", "llama_vo", "llama_regex", "llama_pattern", "llama_head", "llama_embed"],
    "bert": ["bert_a", "bert_b", "bert_bias", "bert_nohead"],
    "gpt2": ["gpt2_a", "gpt2_b"],
}


def outputs(model, **inputs):
    with torch.no_grad():
        return model(**inputs).logits


def peft_model(kind, adapter_dir, names):
    model = PeftModel.from_pretrained(MODEL_BUILDERS[kind](), adapter_dir / names[0], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapter_dir / name, adapter_name=name)
    return model.eval()


def lorakit_model(kind, adapter_dir, names):
    runtime = MultiAdapterModel(MODEL_BUILDERS[kind]())
    for name in names:
        runtime.load_adapter(adapter_dir / name, name)
    return runtime


@pytest.mark.parametrize("kind", CASES)
def test_single_adapter_matches_peft(kind, adapter_dir):
    names = CASES[kind]
    runtime = lorakit_model(kind, adapter_dir, names)
    ids = token_batch()
    base = outputs(runtime, input_ids=ids)
    for name in names:
        reference = peft_model(kind, adapter_dir, [name])  # PEFT cannot mix SEQ_CLS and plain adapters
        runtime.activate(name)
        ours = outputs(runtime, input_ids=ids)
        torch.testing.assert_close(ours, outputs(reference, input_ids=ids), rtol=1e-5, atol=1e-5)
        assert (ours - base).abs().max() > 1e-3, f"adapter {name} changed nothing; the check proves nothing"


@pytest.mark.parametrize("kind", CASES)
def test_routed_batch_matches_peft(kind, adapter_dir):
    names = CASES[kind][:2]
    reference = peft_model(kind, adapter_dir, names)
    runtime = lorakit_model(kind, adapter_dir, names)
    ids = token_batch(batch=5)
    rows = [names[0], names[1], None, names[0], names[1]]
    peft_rows = [name or "__base__" for name in rows]
    with torch.no_grad():
        expected = reference(input_ids=ids, adapter_names=peft_rows).logits
    torch.testing.assert_close(outputs(runtime, input_ids=ids, adapter_names=rows), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", CASES)
def test_merge_matches_peft_merge(kind, adapter_dir):
    name = CASES[kind][0]
    reference = peft_model(kind, adapter_dir, [name]).merge_and_unload()
    runtime = lorakit_model(kind, adapter_dir, [name])
    runtime.merge(name)
    ids = token_batch()
    torch.testing.assert_close(outputs(runtime, input_ids=ids), outputs(reference, input_ids=ids), rtol=1e-5, atol=1e-5)
    merged_model = runtime.unload()
    torch.testing.assert_close(outputs(merged_model, input_ids=ids), outputs(reference, input_ids=ids), rtol=1e-5, atol=1e-5)


def test_generation_matches_peft(adapter_dir):
    names = ["llama_qv", "llama_vo"]
    reference = peft_model("llama", adapter_dir, names)
    runtime = lorakit_model("llama", adapter_dir, names)
    ids = token_batch(batch=3, length=5)
    rows = ["llama_qv", "llama_vo", None]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        expected = reference.generate(input_ids=ids, adapter_names=["llama_qv", "llama_vo", "__base__"], **settings)
        ours = runtime.generate(input_ids=ids, adapter_names=rows, **settings)
    assert ours.tolist() == expected.tolist()
