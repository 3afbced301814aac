"""``merge`` against PEFT's merge_and_unload and hand-built weighted sums, on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from combine_factories import input_ids, logits, reference_model, tiny_bert, tiny_gpt2, tiny_llama
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lorakit.adapters.io import read_adapter
from lorakit.errors import AdapterMismatchError, MergeError, OutputExistsError
from lorakit.merge import AdapterSpec, fold_adapters, merge_to_folder

ATOL, RTOL = 2e-5, 1e-4


def _peft_merged(factory, folder):
    return PeftModel.from_pretrained(factory(), str(folder)).merge_and_unload()


@pytest.mark.parametrize(
    ("kind", "adapter", "auto_class", "factory"),
    [
        ("llama", "llama_qv", AutoModelForCausalLM, tiny_llama),
        ("llama", "llama_head", AutoModelForCausalLM, tiny_llama),
        ("bert", "bert_bias", AutoModelForSequenceClassification, tiny_bert),
        ("gpt2", "gpt2", AutoModelForCausalLM, tiny_gpt2),
    ],
)
def test_merge_equals_peft_merge_and_unload(base_folders, merge_adapters, tmp_path, kind, adapter, auto_class, factory):
    report = merge_to_folder(str(base_folders[kind]), [str(merge_adapters[adapter])], tmp_path / "merged")

    merged = auto_class.from_pretrained(tmp_path / "merged").eval()
    ids = input_ids()
    torch.testing.assert_close(logits(merged, ids), logits(_peft_merged(factory, merge_adapters[adapter]), ids), atol=ATOL, rtol=RTOL)
    assert report.lora_modules > 0


def test_weighted_merge_equals_reference(base_folders, merge_adapters, tmp_path):
    folders = [merge_adapters["llama_qv"], merge_adapters["llama_head"]]
    specs = [f"qv={folders[0]}:0.5", f"head={folders[1]}:1.0"]
    report = merge_to_folder(str(base_folders["llama"]), specs, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.5, 1.0]), ids)
    torch.testing.assert_close(logits(merged, ids), expected, atol=ATOL, rtol=RTOL)
    assert report.module_copies == 1
    assert [a["weight"] for a in report.adapters] == [0.5, 1.0]
    assert [a["name"] for a in report.adapters] == ["qv", "head"]


def test_merge_writes_sharded_folder_with_record(base_folders, merge_adapters, tmp_path):
    report = merge_to_folder(
        str(base_folders["llama"]), [str(merge_adapters["llama_qv"])], tmp_path / "merged", max_shard_size="60KB"
    )

    files = sorted(p.name for p in (tmp_path / "merged").iterdir())
    shards = [name for name in files if name.endswith(".safetensors")]
    assert len(shards) > 1
    assert "model.safetensors.index.json" in files
    assert "config.json" in files
    record = json.loads((tmp_path / "merged" / "lorakit_merge.json").read_text())
    assert record["adapters"][0]["sha256"]["adapter_model.safetensors"]
    assert record["files"] == report.files
    assert record["quantization"] is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_merge_keeps_base_dtype(merge_adapters, tmp_path, dtype):
    tiny_llama(dtype).save_pretrained(tmp_path / "base")
    report = merge_to_folder(str(tmp_path / "base"), [str(merge_adapters["llama_qv"])], tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype="auto").eval()
    assert merged.dtype == dtype
    assert report.dtype == str(dtype).removeprefix("torch.")
    # The reference adds the delta to the half-precision weights in float32 and rounds once.
    reference = tiny_llama(dtype).float()
    fold_adapters(reference, [read_adapter(merge_adapters["llama_qv"])], [1.0])
    expected_weights = reference.model.layers[0].self_attn.q_proj.weight.to(dtype)
    assert torch.equal(merged.model.layers[0].self_attn.q_proj.weight, expected_weights)


def test_merge_copies_tokenizer(tmp_path, merge_adapters):
    from transformers import AutoTokenizer, BertTokenizerFast

    base = tmp_path / "base"
    tiny_bert().save_pretrained(base)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(123)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(base)
    merge_to_folder(str(base), [str(merge_adapters["bert_bias"])], tmp_path / "merged")

    assert (tmp_path / "merged" / "tokenizer_config.json").exists()
    text = "w1 w7 w100 unknown"
    expected = AutoTokenizer.from_pretrained(base)(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(tmp_path / "merged")(text)["input_ids"] == expected


def test_output_exists_is_refused(base_folders, merge_adapters, tmp_path):
    (tmp_path / "merged").mkdir()

    with pytest.raises(OutputExistsError, match="already exists"):
        merge_to_folder(str(base_folders["llama"]), [str(merge_adapters["llama_qv"])], tmp_path / "merged")
    merge_to_folder(str(base_folders["llama"]), [str(merge_adapters["llama_qv"])], tmp_path / "merged", overwrite=True)
    assert (tmp_path / "merged" / "config.json").exists()


def test_non_finite_result_is_refused(merge_adapters, tmp_path):
    tiny_llama(torch.float16).save_pretrained(tmp_path / "base")

    with pytest.raises(MergeError, match=r"model.layers.0.self_attn.q_proj.weight gives NaN or infinity in torch.float16"):
        merge_to_folder(str(tmp_path / "base"), [f"{merge_adapters['llama_qv']}:1e6"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_failed_fold_leaves_model_unchanged(merge_adapters):
    model = tiny_llama(torch.float16)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    adapter = read_adapter(merge_adapters["llama_qv"])
    layer_1_v = adapter.modules["model.layers.1.self_attn.v_proj"]
    layer_1_v.lora_B = layer_1_v.lora_B * 1e6  # only a late module overflows

    with pytest.raises(MergeError, match="layers.1.self_attn.v_proj"):
        fold_adapters(model, [adapter], [1.0])
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_adapter_for_other_model_is_refused(base_folders, merge_adapters, tmp_path):
    with pytest.raises(AdapterMismatchError, match="not found in the model"):
        merge_to_folder(str(base_folders["gpt2"]), [str(merge_adapters["llama_qv"])], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sst=out/sst:0.5", AdapterSpec("sst", "out/sst", 0.5)),
        ("sst=out/sst", AdapterSpec("sst", "out/sst", 1.0)),
        ("out/sst:-1", AdapterSpec(None, "out/sst", -1.0)),
        ("a=dir:with:colons", AdapterSpec("a", "dir:with:colons", 1.0)),
    ],
)
def test_adapter_spec_parse(text, expected):
    assert AdapterSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["name=", "a=path:inf"])
def test_adapter_spec_invalid(text):
    with pytest.raises(MergeError, match=r"expected NAME=PATH\[:WEIGHT\]"):
        AdapterSpec.parse(text)
