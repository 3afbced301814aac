"""Checking an adapter against a base model before anything is changed."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorakit.adapters.model import Adapter, LoraModule, is_embedding_base_copy
from lorakit.errors import AdapterMismatchError

_MAX_LISTED = 5


def unwrap(module: nn.Module) -> nn.Module:
    """Return the original module beneath a lorakit wrapper (or the module itself)."""
    inner = getattr(module, "lorakit_base_module", None)
    return inner if isinstance(inner, nn.Module) else module


def find_module(model: nn.Module, path: str) -> nn.Module | None:
    """Return the module at ``path`` (seen through lorakit wrappers), or ``None``."""
    try:
        return unwrap(model.get_submodule(path))
    except AttributeError:
        return None


def module_names(model: nn.Module) -> list[str]:
    """List the module paths of the base model, leaving out lorakit's own submodules."""
    names = []
    for name, _ in model.named_modules():
        if not name or ".lorakit_" in name or ".lora_" in name:
            continue
        names.append(name)
    return names


def validate_adapter(adapter: Adapter, model: nn.Module, *, modules: Mapping[str, nn.Module] | None = None) -> None:
    """Check that every tensor of ``adapter`` lands on a module of ``model`` with the right shape.

    Nothing is changed. All problems are reported together. An embedding copy on the
    ``meta`` device (read with ``shapes_only``) has no values to compare with the model's.

    Args:
        adapter: The adapter to check.
        model: The model that the adapter is for.
        modules: ``dict(model.named_modules(remove_duplicate=False))``, to look modules
            up faster when checking many adapters against one model.

    Raises:
        AdapterMismatchError: Listing unmatched keys (a few, with a count) beside module
            names that exist, and every shape or vocabulary-size mismatch.
    """
    problems: list[str] = []
    missing: list[str] = []

    def lookup(path: str) -> nn.Module | None:
        if modules is None:
            return find_module(model, path)
        module = modules.get(path)
        return None if module is None else unwrap(module)

    for path, lora in adapter.modules.items():
        module = lookup(path)
        if module is None:
            missing.append(path)
        else:
            problems.extend(_check_lora_module(path, lora, module))
    for path, copy in adapter.module_copies.items():
        target_path = path[: -len(".base_layer")] if is_embedding_base_copy(path) else path
        module = lookup(target_path)
        if module is None:
            missing.append(path)
        else:
            problems.extend(_check_copy(path, copy, module, is_embedding_base_copy(path)))
    if missing:
        problems.insert(0, _describe_missing(missing, model))
    if problems:
        base = adapter.base_model_name_or_path
        trained_on = f" (trained on {base!r})" if base else ""
        raise AdapterMismatchError(
            f"Adapter {adapter.name!r}{trained_on} does not fit this {type(model).__name__}; "
            f"the model was not changed:\n- " + "\n- ".join(problems)
        )


def _describe_missing(missing: list[str], model: nn.Module) -> str:
    names = module_names(model)
    shown = ", ".join(missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    suggestions = difflib.get_close_matches(missing[0], names, n=3, cutoff=0.5)
    leaf_names = sorted({n.rsplit(".", 1)[-1] for n in names if _is_supported(model.get_submodule(n))})
    hint = f" Close module names: {', '.join(suggestions)}." if suggestions else ""
    return (
        f"{len(missing)} adapter modules not found in the model: {shown}{more}.{hint} "
        f"The model's adaptable layers are named: {', '.join(leaf_names)}."
    )


def _is_supported(module: nn.Module) -> bool:
    return isinstance(unwrap(module), (nn.Linear, Conv1D, nn.Embedding))


def layer_shape(module: nn.Module) -> tuple[str, int, int] | None:
    """Return ``(kind, in_features, out_features)`` of a layer LoRA can wrap, else ``None``.

    For an embedding, ``in_features`` is the vocabulary size and ``out_features`` the
    embedding size, matching PEFT's ``lora_embedding_A`` and ``lora_embedding_B``.
    """
    module = unwrap(module)
    if isinstance(module, nn.Linear):
        return "linear", module.in_features, module.out_features
    if isinstance(module, Conv1D):
        in_features, out_features = module.weight.shape  # Conv1D stores (in, out)
        return "conv1d", int(in_features), int(out_features)
    if isinstance(module, nn.Embedding):
        return "embedding", module.num_embeddings, module.embedding_dim
    return None


def _check_lora_module(path: str, lora: LoraModule, module: nn.Module) -> list[str]:
    shape = layer_shape(module)
    if shape is None:
        return [f"{path}: a {type(module).__name__}, which LoRA cannot target (Linear, Conv1D and Embedding can)."]
    kind, in_features, out_features = shape
    if (kind == "embedding") != (lora.kind == "embedding"):
        return [f"{path}: the adapter holds {lora.kind} factors but the model's module is a {type(module).__name__}."]
    problems = []
    if kind == "embedding" and lora.in_features != in_features:
        problems.append(
            f"{path}: vocabulary size {lora.in_features} in the adapter but {in_features} in the model; "
            "load it onto the base model it was trained with (or resize its token embeddings to match)."
        )
    elif lora.in_features != in_features:
        problems.append(f"{path}: lora_A expects {lora.in_features} inputs but the layer has {in_features}.")
    if lora.out_features != out_features:
        problems.append(f"{path}: lora_B gives {lora.out_features} outputs but the layer has {out_features}.")
    if lora.lora_bias is not None:
        if getattr(module, "bias", None) is None:
            problems.append(f"{path}: the adapter has a lora_bias but the layer has no bias to merge it into.")
        elif lora.lora_bias.shape != (out_features,):
            problems.append(f"{path}: lora_bias has shape {tuple(lora.lora_bias.shape)}, expected ({out_features},).")
    return problems


def _check_copy(path: str, copy: dict[str, torch.Tensor], module: nn.Module, is_base_copy: bool) -> list[str]:
    parameters = dict(module.named_parameters(recurse=True))
    problems = []
    for name, tensor in copy.items():
        if name not in parameters:
            problems.append(
                f"{path}.{name}: the module has no parameter {name!r} (it has: {', '.join(parameters) or 'none'})."
            )
            continue
        expected = parameters[name]
        if tuple(tensor.shape) != tuple(expected.shape):
            vocabulary = " (a different vocabulary size)" if isinstance(module, nn.Embedding) else ""
            problems.append(
                f"{path}.{name}: shape {tuple(tensor.shape)} in the adapter but {tuple(expected.shape)} "
                f"in the model{vocabulary}."
            )
        elif is_base_copy and not tensor.is_meta and not torch.equal(tensor.to(expected.device, expected.dtype), expected.detach()):
            problems.append(
                f"{path}: the adapter carries its own copy of the embedding weights and they differ from the "
                "model's (a trained or resized vocabulary); load it onto the base model it was saved with."
            )
    return problems
