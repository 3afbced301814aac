"""Creating new, trainable adapters from a PEFT ``LoraConfig``, initialised as PEFT does."""

from __future__ import annotations

import math
from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from lorakit.adapters.config import check_supported, module_scaling
from lorakit.adapters.model import Adapter, LoraModule
from lorakit.adapters.validate import find_module, layer_shape, module_names
from lorakit.errors import AdapterMismatchError


def new_adapter(name: str, config: LoraConfig, model: nn.Module, dtype: torch.dtype) -> Adapter:
    """Build a fresh adapter for ``model`` from ``config``: ``lora_A`` random, ``lora_B`` zero.

    Raises:
        AdapterMismatchError: ``target_modules`` matches no layer; the message lists the layer names.
        UnsupportedAdapterError: The config asks for a variant lorakit does not apply.
    """
    config = _default_heads(config, model)
    config = _resolve_targets(config, model)
    config_dict = _config_dict(config, model)
    check_supported(config_dict, f"LoraConfig for {name!r}")
    targets = [path for path in module_names(model) if _is_target(config, path, model)]
    if not targets:
        raise AdapterMismatchError(
            f"target_modules={config.target_modules!r} matches no layer of this {type(model).__name__}. "
            f"Its adaptable layers are named: {', '.join(_adaptable_leaf_names(model))}."
        )
    modules = {path: _fresh_module(path, find_module(model, path), config, config_dict, dtype) for path in targets}
    copies = {}
    for wanted in config.modules_to_save or []:
        for path in module_names(model):
            if path == wanted or path.endswith("." + wanted):
                module = find_module(model, path)
                copies[path] = {n: p.detach().clone() for n, p in module.named_parameters()}
    return Adapter(name=name, config=config_dict, modules=modules, module_copies=copies)


def _default_heads(config: LoraConfig, model: nn.Module) -> LoraConfig:
    """Give a sequence-classification adapter its own head, as PEFT's ``SEQ_CLS`` task does."""
    task_type = getattr(config.task_type, "value", config.task_type)
    if task_type != "SEQ_CLS":
        return config
    heads = [name for name in ("classifier", "score") if find_module(model, name) is not None]
    config.modules_to_save = sorted(set(config.modules_to_save or []) | set(heads)) or None
    return config


def _resolve_targets(config: LoraConfig, model: nn.Module) -> LoraConfig:
    targets = config.target_modules
    if targets is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        defaults = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if defaults is None:
            raise AdapterMismatchError(
                f"No default target_modules for model type {model_type!r}; set target_modules, e.g. "
                f"{_adaptable_leaf_names(model)[:4]}."
            )
        config.target_modules = set(defaults)
    elif targets == "all-linear" or targets == ["all-linear"]:
        config.target_modules = set(_all_linear_names(model))
    return config


def _all_linear_names(model: nn.Module) -> list[str]:
    """Return the leaf names of every Linear and Conv1D layer except the output layer, as PEFT does."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output = getattr(output, "lorakit_base_module", output)
    names = set()
    for path in module_names(model):
        module = find_module(model, path)
        shape = layer_shape(module)
        if shape is not None and shape[0] != "embedding" and module is not output:
            names.add(path.rsplit(".", 1)[-1])
    return sorted(names)


def _adaptable_leaf_names(model: nn.Module) -> list[str]:
    return sorted({p.rsplit(".", 1)[-1] for p in module_names(model) if layer_shape(find_module(model, p))})


def _is_target(config: LoraConfig, path: str, model: nn.Module) -> bool:
    if layer_shape(find_module(model, path)) is None:
        return False
    found = check_target_module_exists(config, path)
    return bool(found) and type(found).__name__ != "_ExcludedModule"


def _config_dict(config: LoraConfig, model: nn.Module) -> dict[str, Any]:
    config_dict = config.to_dict()
    for key, value in list(config_dict.items()):
        if isinstance(value, set):
            config_dict[key] = sorted(value)
    if not config_dict.get("base_model_name_or_path"):
        config_dict["base_model_name_or_path"] = getattr(getattr(model, "config", None), "_name_or_path", None)
    config_dict["peft_type"] = "LORA"
    config_dict["task_type"] = getattr(config.task_type, "value", config.task_type)
    return config_dict


def _fresh_module(
    path: str, module: nn.Module, config: LoraConfig, config_dict: dict[str, Any], dtype: torch.dtype
) -> LoraModule:
    kind, in_features, out_features = layer_shape(module)
    r, scaling = module_scaling(config_dict, path)
    device = next(module.parameters()).device
    lora_A = torch.empty(r, in_features, device=device, dtype=dtype)
    lora_B = torch.zeros(out_features, r, device=device, dtype=dtype)
    init = config.init_lora_weights
    if kind == "embedding":
        # PEFT initialises an embedding LoRA the other way round: A zero, B normal.
        nn.init.zeros_(lora_A)
        nn.init.normal_(lora_B)
        if init is False:
            nn.init.normal_(lora_A)
    elif isinstance(init, str) and init.lower() == "gaussian":
        nn.init.normal_(lora_A, std=1 / r)
    else:
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
        if init is False:
            nn.init.kaiming_uniform_(lora_B, a=math.sqrt(5))
    bias = torch.zeros(out_features, device=device, dtype=dtype) if config.lora_bias else None
    return LoraModule(
        lora_A=lora_A,
        lora_B=lora_B,
        scaling=scaling,
        kind="embedding" if kind == "embedding" else "linear",
        lora_bias=bias,
        fan_in_fan_out=kind == "conv1d",
    )
