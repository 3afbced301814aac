"""Factor banks: routed decode steps read same-rank adapters in place, and give each row its adapter's output."""

import pytest
import torch
from factories import make_peft_adapter, tiny_llama, token_batch
from safetensors.torch import load_file

from lorakit import MultiAdapterModel
from lorakit.adapters.io import SAFETENSORS_NAME
from lorakit.runtime import banks

NAMES = ("a", "b", "c", "d", "e", "f")


@pytest.fixture(scope="module")
def bank_adapters(tmp_path_factory):
    """Six rank-4 adapters on q_proj and v_proj of the tiny LLaMA, and one of rank 8."""
    root = tmp_path_factory.mktemp("bank_adapters")
    folders = {name: make_peft_adapter("llama", root / name, seed) for seed, name in enumerate(NAMES, start=31)}
    folders["wide"] = make_peft_adapter("llama", root / "wide", 40, r=8, lora_alpha=8)
    return folders


def runtime_with(folders, names, dtype=torch.float32):
    runtime = MultiAdapterModel(tiny_llama(dtype=dtype))
    for name in names:
        runtime.load_adapter(folders[name], name)
    return runtime


def rows_alone(runtime, ids, rows):
    """Return each row's logits computed alone with its adapter active."""
    outputs = []
    with torch.no_grad():
        for row, spec in enumerate(rows):
            runtime.activate(spec)
            outputs.append(runtime.model(input_ids=ids[row : row + 1]).logits)
    runtime.activate(None)
    return torch.cat(outputs)


def routed_twice(runtime, ids, rows):
    """Run one routed plan twice; the second call of one-token rows takes the batched products."""
    with torch.no_grad(), runtime.route(rows) as plan:
        first = runtime.model(input_ids=ids).logits
        second = runtime.model(input_ids=ids).logits
    return first, second, plan


def q_proj(runtime):
    return runtime.model.model.layers[0].self_attn.q_proj


def stacked_of(plan, layer):
    return plan.layer_cache[id(layer)]._stacked


def test_rows_in_order_use_bank(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    ids = token_batch(batch=4, length=1)
    rows = ["a", "b", "c", "d"]
    expected = rows_alone(runtime, ids, rows)
    first, second, plan = routed_twice(runtime, ids, rows)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)

    layer = q_proj(runtime)
    bank = layer.banks[(4, torch.float32, torch.device("cpu"))]
    assert bank.names == ["a", "b", "c", "d"]
    assert layer.lora_A["c"].data_ptr() == bank.lora_A[2].data_ptr()
    assert layer.lora_B["c"].data_ptr() == bank.lora_B_t[2].data_ptr()
    stacked = stacked_of(plan, layer)
    assert stacked.in_order
    assert stacked.lora_A_t.data_ptr() == bank.lora_A.data_ptr()


def test_bank_keeps_factor_values(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    routed_twice(runtime, token_batch(batch=4, length=1), ["a", "b", "c", "d"])
    stored = load_file(bank_adapters["c"] / SAFETENSORS_NAME)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    layer = q_proj(runtime)
    assert torch.equal(layer.lora_A["c"], stored[f"{prefix}.lora_A.weight"])
    assert torch.equal(layer.lora_B["c"], stored[f"{prefix}.lora_B.weight"])


def test_scattered_rows_use_bank(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    ids = token_batch(batch=6, length=1, seed=1)
    rows = ["b", "a", "b", "d", "d", None]  # slots 0, 1 and 3, with slot 2 unused
    expected = rows_alone(runtime, ids, rows)
    first, second, plan = routed_twice(runtime, ids, rows)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
    stacked = stacked_of(plan, q_proj(runtime))
    assert stacked is not None
    assert stacked.alpha is not None
    assert not stacked.in_order


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(["a", "f", "a", "f"], id="sparse-slots"),
        pytest.param(["a", {"a": 0.5}, {"a": -2.0}, "b"], id="one-adapter-two-weights"),
        pytest.param(["a", "wide", "b", "wide"], id="mixed-ranks"),
        pytest.param(["a", {"a": 1.0, "b": 1.0}, "c", "b"], id="stack-in-a-row"),
    ],
)
def test_plans_outside_bank_copy_factors(bank_adapters, rows):
    runtime = runtime_with(bank_adapters, [*NAMES, "wide"])
    ids = token_batch(batch=len(rows), length=1, seed=2)
    expected = rows_alone(runtime, ids, rows)
    first, second, plan = routed_twice(runtime, ids, rows)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
    assert stacked_of(plan, q_proj(runtime)).alpha is None  # the copied layout carries the scales


def test_unload_moves_last_into_slot(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    runtime.unload_adapter("b")

    layer = q_proj(runtime)
    bank = layer.banks[(4, torch.float32, torch.device("cpu"))]
    assert bank.names == ["a", "d", "c"]
    assert layer.lora_A["d"].data_ptr() == bank.lora_A[1].data_ptr()
    ids = token_batch(batch=3, length=1)
    rows = ["d", "c", "a"]
    expected = rows_alone(runtime, ids, rows)
    _, second, plan = routed_twice(runtime, ids, rows)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
    assert stacked_of(plan, layer).alpha is not None


def test_bank_grows_and_shrinks(bank_adapters, monkeypatch):
    monkeypatch.setattr(banks, "INITIAL_CAPACITY", 2)
    runtime = runtime_with(bank_adapters, NAMES[:2])
    layer = q_proj(runtime)
    parameter = layer.lora_A["a"]
    runtime.load_adapter(bank_adapters["c"], "c")
    bank = layer.banks[(4, torch.float32, torch.device("cpu"))]
    assert bank.capacity == 8  # grown four times
    assert layer.lora_A["a"] is parameter  # an optimizer holding it stays valid
    assert parameter.data_ptr() == bank.lora_A[0].data_ptr()

    runtime.load_adapter(bank_adapters["d"], "d")
    runtime.load_adapter(bank_adapters["e"], "e")
    assert bank.capacity == 8
    for name in ("a", "b", "d", "e"):
        runtime.unload_adapter(name)
    assert bank.names == ["c"]
    assert bank.capacity == 2  # halved at 2 of 8 slots used, and again at 1 of 4
    ids = token_batch(batch=1, length=3)
    expected = rows_alone(runtime_with(bank_adapters, ["c"]), ids, ["c"])
    torch.testing.assert_close(rows_alone(runtime, ids, ["c"]), expected, rtol=0, atol=0)


def test_trainable_parameters_survive_growth(bank_adapters):
    from peft import LoraConfig

    runtime = runtime_with(bank_adapters, NAMES[:1])
    runtime.add_adapter("new", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable = runtime.trainable_parameters()
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    runtime.load_adapter(bank_adapters["b"], "b")
    runtime.load_adapter(bank_adapters["c"], "c")
    assert [id(p) for p in runtime.trainable_parameters()] == [id(p) for p in trainable]

    runtime.activate("new")
    runtime.model(input_ids=token_batch(batch=2, length=4)).logits.pow(2).mean().backward()
    optimizer.step()
    layer = q_proj(runtime)
    assert layer.lora_B["new"].abs().sum() > 0  # lora_B starts at zero; the step reached the layer's parameter


def test_save_after_bank_equals_file(bank_adapters, tmp_path):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    routed_twice(runtime, token_batch(batch=4, length=1), ["a", "b", "c", "d"])
    saved = runtime.save_adapter("c", tmp_path / "c")
    written = load_file(saved / SAFETENSORS_NAME)
    stored = load_file(bank_adapters["c"] / SAFETENSORS_NAME)
    assert written.keys() == stored.keys()
    for key, tensor in stored.items():
        assert torch.equal(written[key], tensor), key


def test_dtype_change_rebuilds_bank(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    ids = token_batch(batch=4, length=1)
    rows = ["a", "b", "c", "d"]
    routed_twice(runtime, ids, rows)
    runtime.model.to(torch.float64)
    expected = rows_alone(runtime, ids, rows)
    _, second, _ = routed_twice(runtime, ids, rows)
    torch.testing.assert_close(second, expected, rtol=1e-10, atol=1e-10)
    layer = q_proj(runtime)
    assert list(layer.banks) == [(4, torch.float64, torch.device("cpu"))]
    assert layer.banks[(4, torch.float64, torch.device("cpu"))].is_current("c")


def test_generation_with_bank_equals_rows_alone(bank_adapters):
    runtime = runtime_with(bank_adapters, NAMES[:4])
    ids = token_batch(batch=4, length=5, seed=3)
    rows = ["a", "b", "c", "d"]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        routed = runtime.generate(input_ids=ids, adapter_names=rows, **settings)
        for row, name in enumerate(rows):
            runtime.activate(name)
            alone = runtime.model.generate(input_ids=ids[row : row + 1], **settings)
            assert torch.equal(routed[row], alone[0]), name
    assert q_proj(runtime).banks[(4, torch.float32, torch.device("cpu"))].names == list(rows)


def test_frozen_and_trainable_give_same_bits(bank_adapters):
    """A trainable adapter takes the out-of-place path, a frozen one the in-place path; both give the same bits."""
    runtime = runtime_with(bank_adapters, ["a", "wide"])
    runtime.activate({"a": 0.7, "wide": -1.3})
    ids = token_batch(batch=2, length=6)
    with torch.no_grad():
        frozen = runtime.model(input_ids=ids).logits
        runtime.set_trainable("wide", True)
        trainable = runtime.model(input_ids=ids).logits
    assert torch.equal(frozen, trainable)


def test_deepcopy_keeps_bank_views(bank_adapters):
    import copy

    runtime = runtime_with(bank_adapters, NAMES[:2])
    runtime.activate("b")
    copied = copy.deepcopy(runtime.model)  # with a copy of the runtime state: "b" active
    layer = copied.model.layers[0].self_attn.q_proj
    bank = layer.banks[(4, torch.float32, torch.device("cpu"))]
    assert bank.is_current("a")
    assert bank.is_current("b")
    assert bank.lora_A.data_ptr() != q_proj(runtime).banks[(4, torch.float32, torch.device("cpu"))].lora_A.data_ptr()
    ids = token_batch(batch=2, length=4)
    with torch.no_grad():
        expected = runtime.model(input_ids=ids).logits
        actual = copied(input_ids=ids).logits
    assert torch.equal(actual, expected)


def test_saved_model_loads_with_banks(bank_adapters, tmp_path):
    runtime = runtime_with(bank_adapters, NAMES[:2])
    runtime.activate("a")
    torch.save(runtime.model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    ids = token_batch(batch=2, length=4)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, runtime.model(input_ids=ids).logits)
    bank = loaded.model.layers[0].self_attn.q_proj.banks[(4, torch.float32, torch.device("cpu"))]
    assert bank.is_current("a")
