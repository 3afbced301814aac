"""Loading several adapters in one call: the same model as one call each, banks sized once, all or none."""

import mmap
import shutil

import pytest
import torch
from factories import make_peft_adapter, tiny_llama, token_batch
from safetensors.torch import load_file, save_file

from lorakit import MultiAdapterModel, read_adapter
from lorakit.adapters.io import SAFETENSORS_NAME
from lorakit.errors import AdapterMismatchError, LorakitError
from lorakit.runtime import banks


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Five rank-4 adapters on q_proj and v_proj, two of rank 8 on q_proj, v_proj and o_proj."""
    root = tmp_path_factory.mktemp("load_many")
    adapters = [make_peft_adapter("llama", root / f"r4_{seed}", seed) for seed in range(50, 55)]
    adapters += [
        make_peft_adapter("llama", root / f"r8_{seed}", seed, r=8, target_modules=["q_proj", "v_proj", "o_proj"])
        for seed in range(55, 57)
    ]
    return adapters


@pytest.fixture(scope="module")
def other_model_folder(tmp_path_factory):
    """An adapter for GPT-2, whose modules the LLaMA does not have."""
    return make_peft_adapter("gpt2", tmp_path_factory.mktemp("other") / "gpt2", 60)


def one_by_one(folders):
    runtime = MultiAdapterModel(tiny_llama())
    for folder in folders:
        runtime.load_adapter(folder)
    return runtime


def factors(runtime):
    return {name: parameter.detach().clone() for name, parameter in runtime.model.named_parameters() if "lora_" in name}


def bank_layout(runtime):
    """Return each layer's banks as ``{key: (capacity, member names)}``."""
    layout = {}
    for path, layer in runtime._lora_layers.items():
        layout[path] = {key: (bank.capacity, list(bank.names)) for key, bank in layer.banks.items()}
    return layout


def routed_logits(runtime, names):
    ids = token_batch(batch=len(names), length=5)
    with torch.no_grad():
        return runtime(input_ids=ids, adapter_names=list(names)).logits


def test_load_adapters_matches_load_adapter(folders):
    together = MultiAdapterModel(tiny_llama())
    names = together.load_adapters(folders)
    separately = one_by_one(folders)

    assert names == [folder.name for folder in folders] == separately.adapters
    assert factors(together).keys() == factors(separately).keys()
    for key, value in factors(together).items():
        assert torch.equal(value, factors(separately)[key]), key
    assert torch.equal(routed_logits(together, names), routed_logits(separately, names))


def test_load_adapters_mapping_names(folders):
    runtime = MultiAdapterModel(tiny_llama())
    assert runtime.load_adapters({"first": folders[0], "second": folders[5]}) == ["first", "second"]
    reference = one_by_one([folders[0]])
    runtime.activate("first")
    reference.activate(folders[0].name)
    ids = token_batch(batch=2, length=5)
    with torch.no_grad():
        assert torch.equal(runtime(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_load_adapters_grows_each_bank_once(folders, monkeypatch):
    resizes = []
    original = banks.FactorBank._resize
    monkeypatch.setattr(banks.FactorBank, "_resize", lambda bank, capacity: (resizes.append(capacity), original(bank, capacity)))
    runtime = MultiAdapterModel(tiny_llama())
    copies = [folders[0]] * 20
    runtime.load_adapters({f"copy{i}": folder for i, folder in enumerate(copies)})

    q_proj = runtime.model.model.layers[0].self_attn.q_proj
    (bank,) = q_proj.banks.values()
    assert bank.capacity == 20
    assert len(bank.names) == 20
    assert set(resizes) == {20}  # one resize per bank, straight to 20 slots, not 16 and then 64
    assert len(resizes) == len(runtime._lora_layers)


def test_load_adapters_bad_adapter_changes_nothing(folders, other_model_folder):
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(folders[0])
    modules_before = dict(runtime.model.named_modules())
    banks_before = bank_layout(runtime)
    logits_before = routed_logits(runtime, [folders[0].name])

    with pytest.raises(AdapterMismatchError, match="c_attn"):
        runtime.load_adapters([folders[1], folders[5], other_model_folder])

    assert runtime.adapters == [folders[0].name]
    assert dict(runtime.model.named_modules()).keys() == modules_before.keys()
    assert all(runtime.model.get_submodule(path) is module for path, module in modules_before.items())
    assert bank_layout(runtime) == banks_before
    assert torch.equal(routed_logits(runtime, [folders[0].name]), logits_before)


@pytest.mark.parametrize("failing_call", [1, 3])
def test_load_adapters_install_failure_rolls_back(folders, monkeypatch, failing_call):
    runtime = MultiAdapterModel(tiny_llama())
    runtime.load_adapter(folders[5])  # rank 8, so the rank-4 adapters need new banks
    modules_before = dict(runtime.model.named_modules())
    logits_before = routed_logits(runtime, [folders[5].name])
    original = MultiAdapterModel._install
    calls = []

    def fail(self, name, adapter):
        calls.append(name)
        if len(calls) == failing_call:
            raise RuntimeError("simulated failure")
        return original(self, name, adapter)

    monkeypatch.setattr(MultiAdapterModel, "_install", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        runtime.load_adapters(folders[:4])

    assert runtime.adapters == [folders[5].name]
    assert dict(runtime.model.named_modules()) == modules_before
    assert all(len(layer.banks) == 1 for layer in runtime._lora_layers.values())  # no empty rank-4 bank is left
    assert torch.equal(routed_logits(runtime, [folders[5].name]), logits_before)


def test_load_adapters_duplicate_name(folders):
    runtime = MultiAdapterModel(tiny_llama())
    with pytest.raises(LorakitError, match=rf"named '{folders[0].name}'.*mapping"):
        runtime.load_adapters([folders[0], folders[0]])
    assert runtime.adapters == []


def test_load_adapters_empty_list():
    runtime = MultiAdapterModel(tiny_llama())
    with pytest.raises(LorakitError, match="no adapters"):
        runtime.load_adapters([])


def test_load_adapters_folder_restores_stack(folders, tmp_path):
    runtime = one_by_one(folders[:3])
    runtime.activate({folders[0].name: 0.5, folders[2].name: 1.0})
    runtime.save_adapters(tmp_path / "all")

    restored = MultiAdapterModel(tiny_llama())
    assert restored.load_adapters(tmp_path / "all") == [folder.name for folder in folders[:3]]
    assert restored.active == runtime.active


class _Recorder:
    """A stand-in for a memory map that records ``madvise`` calls."""

    def __init__(self):
        self.calls = []

    def madvise(self, option, start, length):
        self.calls.append((option, start, length))


@pytest.mark.parametrize("slot_kib, start, stop", [(256, 0, 16), (256, 3, 13), (720, 1, 7), (256, 0, 7), (4096, 1, 2)])
def test_use_huge_pages_whole_pages_only(monkeypatch, slot_kib, start, stop):
    huge = 2 * 1024 * 1024
    monkeypatch.setattr(banks, "_huge_page_size", lambda: huge)
    bank = torch.empty(16, slot_kib * 256, dtype=torch.float32)  # slot_kib KiB per slot
    memory = _Recorder()
    banks._use_huge_pages(memory, bank, start, stop)

    address, slot_bytes = bank.data_ptr(), slot_kib * 1024
    low, high = address + start * slot_bytes, address + stop * slot_bytes
    whole = [page for page in range(low // huge, high // huge + 1) if page * huge >= low and (page + 1) * huge <= high]
    if not whole:
        assert memory.calls == []
        return
    ((option, offset, length),) = memory.calls
    assert option == mmap.MADV_HUGEPAGE
    assert address + offset == whole[0] * huge
    assert length == len(whole) * huge


def test_read_adapter_shapes_only(folders):
    full = read_adapter(folders[5])
    header = read_adapter(folders[5], shapes_only=True)

    assert header.modules.keys() == full.modules.keys()
    for path, module in header.modules.items():
        for tensor, reference in zip(module.tensors(), full.modules[path].tensors()):
            assert tensor.is_meta
            assert tensor.shape == reference.shape
            assert tensor.dtype == reference.dtype
        assert module.scaling == full.modules[path].scaling


def test_load_adapters_heads_and_memory_adapters(adapter_dir):
    """Module copies (heads, embeddings) and adapters given in memory load as they do one by one."""
    sources = {
        "head": adapter_dir / "llama_head",
        "head2": adapter_dir / "llama_head2",
        "embed": adapter_dir / "llama_embed",
        "qv": read_adapter(adapter_dir / "llama_qv"),
    }
    together = MultiAdapterModel(tiny_llama())
    together.load_adapters(sources)
    separately = MultiAdapterModel(tiny_llama())
    for name, source in sources.items():
        separately.load_adapter(source, name)

    for name in sources:
        assert torch.equal(routed_logits(together, [name]), routed_logits(separately, [name])), name
    assert torch.equal(routed_logits(together, list(sources)), routed_logits(separately, list(sources)))


def test_load_adapters_checks_embedding_copy_values(adapter_dir, tmp_path):
    """The header check cannot compare an embedding copy with the model, so the install step does."""
    changed = tmp_path / "changed_embed"
    shutil.copytree(adapter_dir / "llama_embed", changed)
    tensors = load_file(changed / SAFETENSORS_NAME)
    tensors["base_model.model.model.embed_tokens.base_layer.weight"][0, 0] += 1.0
    save_file(tensors, changed / SAFETENSORS_NAME)
    runtime = MultiAdapterModel(tiny_llama())
    plain = dict(runtime.model.named_modules())

    with pytest.raises(AdapterMismatchError, match="differ from the model's"):
        runtime.load_adapters([adapter_dir / "llama_qv", changed])

    assert runtime.adapters == []
    assert dict(runtime.model.named_modules()) == plain
