"""Full module copies (modules_to_save) in a combination follow the runtime's stack rule."""

from __future__ import annotations

import pytest
import torch
from combine_factories import input_ids, logits, peft_logits, reference_model, tiny_bert, tiny_llama

from lorakit.adapters.copies import combine_module_copies
from lorakit.combine import combine_folders
from lorakit.errors import CombineError
from lorakit.runtime import MultiAdapterModel

ATOL, RTOL = 2e-5, 1e-4


def _copy(seed: int, shape=(3, 4)) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(shape, generator=generator), "bias": torch.randn(shape[0], generator=generator)}


def test_weights_summing_to_one_need_no_base():
    copies = [_copy(1), _copy(2)]
    combined = combine_module_copies(copies, [0.3, 0.7], path="head")

    for name in ("weight", "bias"):
        torch.testing.assert_close(combined[name], 0.3 * copies[0][name] + 0.7 * copies[1][name])


def test_one_copy_at_weight_one_is_exact():
    copies = [_copy(1), None]
    combined = combine_module_copies(copies, [1.0, 0.5], path="head")

    assert torch.equal(combined["weight"], copies[0]["weight"])
    assert torch.equal(combined["bias"], copies[0]["bias"])


def test_base_rule_with_base():
    copies, base = [_copy(1), None, _copy(3)], _copy(4)
    weights = [1.0, 2.0, 1.0]
    combined = combine_module_copies(copies, weights, base, path="head")

    for name in ("weight", "bias"):
        expected = base[name] + 1.0 * (copies[0][name] - base[name]) + 1.0 * (copies[2][name] - base[name])
        torch.testing.assert_close(combined[name], expected)


def test_base_needed_is_an_error():
    with pytest.raises(CombineError, match=r"'head'.*sum to 2.*Pass the base model"):
        combine_module_copies([_copy(1), _copy(2)], [1.0, 1.0], path="head")


def test_copies_that_cancel_are_the_base():
    copy = _copy(1)

    assert combine_module_copies([copy, copy], [1.0, -1.0], path="head") is None
    assert combine_module_copies([copy, None], [0.0, 1.0], path="head") is None


def test_copy_shapes_differ_is_an_error():
    with pytest.raises(CombineError, match=r"'head'.*copy 2 has parameters bias \[5\], weight \[5, 4\]"):
        combine_module_copies([_copy(1), _copy(2, shape=(5, 4))], [0.5, 0.5], path="head")


def test_weights_count_differs_is_an_error():
    with pytest.raises(CombineError, match="2 copies but 3 weights"):
        combine_module_copies([_copy(1), _copy(2)], [0.5, 0.5, 0.0], path="head")


def test_lm_head_copies_combine_like_reference(adapters, tmp_path):
    folders = [adapters["head"], adapters["head2"]]
    output, report = combine_folders(folders, [0.3, 0.7], tmp_path / "combined", "linear")

    assert list(report.module_copies) == ["lm_head"]
    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.3, 0.7]), ids)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=ATOL, rtol=RTOL)


def test_lm_head_copies_need_base_model(adapters, tmp_path):
    folders = [adapters["head"], adapters["head2"]]

    with pytest.raises(CombineError, match=r"'lm_head'.*sum to 1.5.*--model"):
        combine_folders(folders, [0.5, 1.0], tmp_path / "combined", "linear")
    assert not (tmp_path / "combined").exists()


def test_lm_head_copies_with_base_model(adapters, tmp_path):
    folders = [adapters["head"], adapters["head2"]]
    base_folder = tmp_path / "base"
    tiny_llama().save_pretrained(base_folder)
    output, _ = combine_folders(folders, [0.5, 1.0], tmp_path / "combined", "linear", model=str(base_folder))

    ids = input_ids()
    expected = logits(reference_model(tiny_llama, folders, [0.5, 1.0]), ids)
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), expected, atol=ATOL, rtol=RTOL)


def test_combined_equals_runtime_stack(adapters, tmp_path):
    folders = [adapters["head"], adapters["head2"], adapters["qv"]]
    weights = [0.5, 1.0, -0.5]
    output, _ = combine_folders(folders, weights, tmp_path / "combined", "linear", model=tiny_llama())

    runtime = MultiAdapterModel(tiny_llama())
    names = [runtime.load_adapter(folder, f"a{i}") for i, folder in enumerate(folders)]
    runtime.activate(dict(zip(names, weights)))
    ids = input_ids()
    with torch.no_grad():
        stacked = runtime(input_ids=ids).logits
    torch.testing.assert_close(peft_logits(tiny_llama, output, ids), stacked, atol=ATOL, rtol=RTOL)


def test_classifier_heads_combine(adapters, tmp_path):
    folders = [adapters["bert_a"], adapters["bert_b"]]
    output, report = combine_folders(folders, [0.5, 0.5], tmp_path / "combined", "linear")

    assert list(report.module_copies) == ["classifier"]
    ids = input_ids()
    expected = logits(reference_model(tiny_bert, folders, [0.5, 0.5]), ids)
    torch.testing.assert_close(peft_logits(tiny_bert, output, ids), expected, atol=ATOL, rtol=RTOL)
