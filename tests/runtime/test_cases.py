"""Failures that users of other multi-adapter tools met, each as a test of the runtime."""

import pytest
import torch
from factories import tiny_bert, tiny_llama, token_batch
from peft import LoraConfig, PeftModel

from lorakit import AdapterNotFoundError, LorakitError, MultiAdapterModel, RoutingError
from lorakit.adapters import read_adapter


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


def alone(builder, path, ids):
    runtime = MultiAdapterModel(builder())
    runtime.activate(runtime.load_adapter(path))
    return logits(runtime, ids)


def test_second_load_equals_fresh_model(adapter_dir):  # C01
    base = tiny_llama()
    first = MultiAdapterModel(base)
    first.load_adapter(adapter_dir / "llama_qv", "m1")
    first.load_adapter(adapter_dir / "llama_vo", "m2")
    first.activate("m2")
    ids = token_batch()
    torch.testing.assert_close(logits(first, ids), alone(tiny_llama, adapter_dir / "llama_vo", ids))
    with pytest.raises(LorakitError, match="already has a lorakit runtime"):
        MultiAdapterModel(base)
    with pytest.raises(LorakitError, match="already loaded"):
        first.load_adapter(adapter_dir / "llama_qv", "m1")


def test_peft_model_is_rejected(adapter_dir):  # C01: nested wrappers
    peft_model = PeftModel.from_pretrained(tiny_llama(), adapter_dir / "llama_qv")
    with pytest.raises(LorakitError, match="PeftModel"):
        MultiAdapterModel(peft_model)
    with pytest.raises(LorakitError, match="PEFT adapter layers"):
        MultiAdapterModel(peft_model.base_model.model)


def test_frozen_adapter_and_new_trainable_one(adapter_dir, tmp_path):  # C02
    model = tiny_llama()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    runtime = MultiAdapterModel(model)
    runtime.load_adapter(adapter_dir / "llama_qv", "A")
    frozen_A = {k: v.clone() for k, v in runtime.export_adapter("A").modules.items() for v in [v.lora_A]}
    runtime.add_adapter("B", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    runtime.activate({"A": 1.0, "B": 1.0})
    trainable = runtime.trainable_parameters()
    # 2 layers x (q: A 4x32 + B 32x4, v: A 4x32 + B 16x4)
    assert sum(p.numel() for p in trainable) == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4)
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    loss = model(input_ids=token_batch(), labels=token_batch()).loss
    loss.backward()
    optimizer.step()
    model.eval()
    exported_B = runtime.export_adapter("B")
    assert any(m.lora_B.abs().max() > 0 for m in exported_B.modules.values()), "B did not train"
    for key, value in runtime.export_adapter("A").modules.items():
        assert torch.equal(value.lora_A, frozen_A[key])
    runtime.unload()
    for key, value in model.state_dict().items():
        assert torch.equal(value, base_state[key]), key


def test_saved_trainable_adapter_loads_in_peft(tmp_path):  # C02: flat PEFT keys
    runtime = MultiAdapterModel(tiny_llama())
    runtime.add_adapter("B", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for parameter in runtime.trainable_parameters():
            parameter.normal_()
    runtime.activate("B")
    runtime.save_adapter("B", tmp_path / "B")
    ids = token_batch()
    reference = PeftModel.from_pretrained(tiny_llama(), tmp_path / "B").eval()
    torch.testing.assert_close(logits(runtime, ids), logits(reference, ids), rtol=1e-5, atol=1e-5)
    keys = read_adapter(tmp_path / "B").modules
    assert "model.layers.0.self_attn.q_proj" in keys


@pytest.mark.parametrize("name", ["llama_regex", "llama_pattern"])
def test_regex_targets_for_several_adapters(adapter_dir, name):  # C03
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_regex", "first")
    runtime.load_adapter(adapter_dir / name, "second")
    ids = token_batch()
    runtime.activate("second")
    torch.testing.assert_close(logits(runtime, ids), alone(tiny_llama, adapter_dir / name, ids))


def test_stack_equals_hand_built_sum(adapter_dir):  # C04
    a, b = read_adapter(adapter_dir / "llama_qv"), read_adapter(adapter_dir / "llama_vo")
    reference = tiny_llama()
    with torch.no_grad():
        for adapter, weight in ((a, 0.5), (b, 1.0)):
            for path, module in adapter.modules.items():
                reference.get_submodule(path).weight += weight * module.delta()
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(a)
    runtime.load_adapter(b)
    runtime.activate({"llama_qv": 0.5, "llama_vo": 1.0})
    ids = token_batch()
    torch.testing.assert_close(logits(runtime, ids), logits(reference, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", [{"llama_qv": -0.7, "llama_vo": 0.0}, {"llama_qv": 2.0, "llama_vo": -1.5}])
def test_stack_with_negative_and_zero_weights(adapter_dir, weights):
    reference = tiny_llama()
    with torch.no_grad():
        for name, weight in weights.items():
            for path, module in read_adapter(adapter_dir / name).modules.items():
                reference.get_submodule(path).weight += weight * module.delta()
    runtime = MultiAdapterModel(tiny_llama())
    for name in weights:
        runtime.load_adapter(adapter_dir / name)
    runtime.activate(weights)
    ids = token_batch()
    torch.testing.assert_close(logits(runtime, ids), logits(reference, ids), rtol=1e-5, atol=1e-5)


def test_switching_heads(adapter_dir):  # C05
    runtime = MultiAdapterModel(tiny_bert())
    for name in ("bert_a", "bert_b", "bert_nohead"):
        runtime.load_adapter(adapter_dir / name, name)
    ids = token_batch()
    expected = {name: alone(tiny_bert, adapter_dir / name, ids) for name in ("bert_a", "bert_b", "bert_nohead")}
    for name in ("bert_a", "bert_b", "bert_nohead", "bert_a"):
        runtime.activate(name)
        torch.testing.assert_close(logits(runtime, ids), expected[name])
    runtime.activate("bert_nohead")
    head = runtime.model.classifier
    assert head.copies.keys() == {"bert_a", "bert_b"}  # c keeps the base head


def test_eval_mode_is_kept(adapter_dir):  # C06
    model = tiny_llama()
    runtime = MultiAdapterModel(model)
    runtime.add_adapter("d", LoraConfig(r=4, target_modules=["q_proj"], lora_dropout=0.5), trainable=False)
    runtime.load_adapter(adapter_dir / "llama_qv")
    runtime.activate({"d": 1.0, "llama_qv": 1.0})
    ids = token_batch()
    assert torch.equal(logits(runtime, ids), logits(runtime, ids))
    assert not any(module.training for module in model.modules())
    assert runtime.trainable_parameters() == []


def test_routed_rows_use_own_heads(adapter_dir):  # C07
    runtime = MultiAdapterModel(tiny_bert())
    runtime.load_adapter(adapter_dir / "bert_a", "a")
    runtime.load_adapter(adapter_dir / "bert_b", "b")
    ids = token_batch(batch=4)
    routed = logits(runtime, ids, adapter_names=["a", "b", None, "a"])
    for row, (name, path) in enumerate([("a", "bert_a"), ("b", "bert_b"), (None, None), ("a", "bert_a")]):
        expected = logits(tiny_bert(), ids[row : row + 1]) if path is None else alone(tiny_bert, adapter_dir / path, ids[row : row + 1])
        torch.testing.assert_close(routed[row : row + 1], expected, rtol=1e-5, atol=1e-5)


def test_routing_errors(adapter_dir):  # C08
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "alpha")
    runtime.load_adapter(adapter_dir / "llama_vo", "beta")
    ids = token_batch(batch=3)
    with pytest.raises(AdapterNotFoundError, match=r"'alhpa' is not loaded; loaded adapters: alpha, beta"):
        logits(runtime, ids, adapter_names=["alpha", "alhpa", None])
    with pytest.raises(RoutingError, match="2 entries but the batch has 3 rows"):
        logits(runtime, ids, adapter_names=["alpha", "beta"])
    with pytest.raises(RoutingError, match="one entry per row"):
        logits(runtime, ids, adapter_names="alpha")
    with pytest.raises(RoutingError, match="finite number"):
        runtime.activate({"alpha": float("nan")})


def test_beam_search_keeps_row_adapters(adapter_dir):  # C09
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "l1")
    runtime.load_adapter(adapter_dir / "llama_vo", "l2")
    ids = token_batch(batch=3, length=5)
    settings = {"max_new_tokens": 6, "num_beams": 2, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        routed = runtime.generate(input_ids=ids, adapter_names=[None, "l1", "l2"], **settings)
        for row, name in enumerate([None, "l1", "l2"]):
            runtime.activate(name)
            single = runtime.generate(input_ids=ids[row : row + 1], **settings)
            assert routed[row].tolist() == single[0].tolist(), f"row {row} ({name})"
        runtime.activate(None)


def test_save_and_restore_all_adapters(adapter_dir, tmp_path):  # C15
    runtime = MultiAdapterModel(tiny_llama())
    runtime.add_adapter("q4", LoraConfig(r=4, target_modules=["q_proj"]), trainable=False)
    runtime.add_adapter("v8", LoraConfig(r=8, target_modules=["v_proj"]), trainable=False)
    runtime.add_adapter("o2", LoraConfig(r=2, target_modules=["o_proj"]), trainable=False)
    with torch.no_grad():
        for name in runtime.adapters:
            for parameter in runtime._adapter_parameters(name):
                parameter.normal_()
    runtime.activate({"q4": 1.0, "o2": -0.5})
    ids = token_batch()
    before = logits(runtime, ids)
    runtime.save_adapters(tmp_path / "all")
    restored = MultiAdapterModel(tiny_llama())
    assert restored.load_adapters(tmp_path / "all") == ["q4", "v8", "o2"]
    assert restored.active == {"q4": 1.0, "o2": -0.5}
    assert restored.record("v8").config["r"] == 8
    torch.testing.assert_close(logits(restored, ids), before, rtol=0, atol=0)


def test_stacked_head_copies_follow_delta_rule(adapter_dir):  # C17
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_head", "h1")
    runtime.load_adapter(adapter_dir / "llama_head2", "h2")
    weights = {"h1": 0.25, "h2": 0.5}
    runtime.activate(weights)
    reference = tiny_llama()
    base_head = reference.lm_head.weight.detach().clone()
    with torch.no_grad():
        for name, weight in weights.items():
            adapter = read_adapter(adapter_dir / ("llama_head" if name == "h1" else "llama_head2"))
            for path, module in adapter.modules.items():
                reference.get_submodule(path).weight += weight * module.delta()
            reference.lm_head.weight += weight * (adapter.module_copies["lm_head"]["weight"] - base_head)
    ids = token_batch()
    torch.testing.assert_close(logits(runtime, ids), logits(reference, ids), rtol=1e-5, atol=1e-5)
    routed = logits(runtime, ids[:2], adapter_names=[weights, "h2"])
    torch.testing.assert_close(routed[:1], logits(reference, ids[:1]), rtol=1e-5, atol=1e-5)


def test_trainable_flags_are_explicit(adapter_dir):  # C18
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "x")
    runtime.load_adapter(adapter_dir / "llama_vo", "y")
    runtime.activate({"x": 1.0, "y": 1.0})
    assert runtime.trainable_parameters() == []
    runtime.set_trainable("x")
    runtime.set_trainable("y")
    ids = token_batch()
    for name in ("x", "y"):
        runtime.activate(name)
        runtime.model(input_ids=ids, labels=ids).loss.backward()
    for name in ("x", "y"):
        gradients = [p.grad for p in runtime._adapter_parameters(name)]
        assert all(g is not None and g.abs().sum() > 0 for g in gradients), name
    runtime.set_trainable("x", False)
    assert all(not p.requires_grad for p in runtime._adapter_parameters("x"))


def test_train_mode_is_kept(adapter_dir):
    model = tiny_llama().train()
    runtime = MultiAdapterModel(model)
    runtime.load_adapter(adapter_dir / "llama_head", "h")
    runtime.activate("h")
    with runtime.route(["h"]):
        pass
    assert all(module.training for module in model.modules())
    assert runtime.trainable_parameters() == []


def test_new_classifier_adapter_gets_own_head():
    runtime = MultiAdapterModel(tiny_bert())
    runtime.add_adapter("cls", LoraConfig(task_type="SEQ_CLS", r=2, target_modules="all-linear"))
    record = runtime.record("cls")
    assert record.copy_paths == ["classifier"]
    assert not any(path.startswith("classifier") for path in record.module_paths)
    assert any(path.endswith("attention.self.query") for path in record.module_paths)


def test_scattered_rows_equal_rows_alone(adapter_dir):
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(adapter_dir / "llama_qv", "a")
    runtime.load_adapter(adapter_dir / "llama_vo", "b")
    rows = ["a", "b", "a", None, {"a": 0.5, "b": -1.0}, "b", "a", {"a": 0.5, "b": -1.0}]
    ids = token_batch(batch=len(rows))
    expected = []
    for row, spec in enumerate(rows):
        runtime.activate(spec)
        expected.append(logits(runtime, ids[row : row + 1]))
    runtime.activate(None)
    expected = torch.cat(expected)
    with torch.no_grad(), runtime.route(rows):
        first = runtime.model(input_ids=ids).logits
        second = runtime.model(input_ids=ids).logits  # a plan applied again takes the batched path
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
