"""Quantized base models: detecting them, dequantizing them, and measuring what a merge changes.

A merge adds dense deltas to the weights, which a quantized weight cannot hold
exactly, so lorakit merges into a dequantized copy and writes it unquantized. The
forced path measures the largest difference between the outputs of the quantized
model with the adapters applied unmerged and of the merged, dequantized model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.adapters.copies import combine_module_copies
from lorakit.adapters.model import Adapter, is_embedding_base_copy
from lorakit.adapters.validate import find_module, layer_shape
from lorakit.combine.api import module_terms
from lorakit.combine.factored import combined_bias, concatenate
from lorakit.errors import MergeError

logger = logging.getLogger(__name__)

# Layer classes of quantization libraries (bitsandbytes, GPTQ/AWQ kernels, HQQ, quanto,
# transformers' packed GGUF layer) that store packed weights.
QUANTIZED_LAYER_NAMES = frozenset({
    "Linear4bit", "Linear8bitLt", "QuantLinear", "WQLinear_GEMM", "WQLinear_GEMV", "HQQLinear", "QLinear",
    "GgufLinear",
})
PROBE_LENGTH = 16


@dataclass
class MeasuredDifference:
    """The largest output difference between the unmerged quantized model and the merged one."""

    max_abs: float
    max_abs_reference: float

    @property
    def relative(self) -> float:
        return self.max_abs / self.max_abs_reference if self.max_abs_reference else 0.0

    def describe(self) -> str:
        return (
            f"max |difference| {self.max_abs:.3g} on outputs of max |value| {self.max_abs_reference:.3g} "
            f"(relative {self.relative:.3g}), over a probe of {PROBE_LENGTH} tokens"
        )


def quantization_method(model: nn.Module) -> str | None:
    """Return the quantization method of ``model`` (``"gguf"``, ``"bitsandbytes"``, ...) or ``None``."""
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None) or getattr(
        getattr(model, "config", None), "quantization_config", None
    )
    if config is not None:
        method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
        return str(getattr(method, "value", method) or "unknown")
    for module in model.modules():
        if type(module).__name__ in QUANTIZED_LAYER_NAMES:
            return type(module).__name__
    return None


def dequantize_in_place(model: nn.Module) -> None:
    """Replace packed quantized layers by float ones and drop the quantization settings, in place.

    A model that transformers already dequantized on load (a GGUF file without a GGUF
    kernel) only loses its ``quantization_config``, so that it saves as a plain model.

    Raises:
        MergeError: transformers cannot dequantize this quantization method.
    """
    packed = [name for name, module in model.named_modules() if type(module).__name__ in QUANTIZED_LAYER_NAMES]
    # NOTE: only GGUF files that transformers dequantizes on load are tested. Packed layers
    # (bitsandbytes, GPTQ, AWQ) go through transformers' dequantize(), never run here
    # because no such backend was installed.
    if packed:
        try:
            model.dequantize()
        except (ValueError, NotImplementedError, AttributeError, RuntimeError, TypeError) as err:
            raise MergeError(
                f"The base model's packed layers ({', '.join(packed[:3])}...) cannot be dequantized: {err}. "
                "Merge into an unquantized copy of the base model instead."
            ) from err
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def probe_outputs(model: nn.Module) -> torch.Tensor | None:
    """Run a fixed token sequence through ``model`` and return its logits (or hidden states).

    Returns ``None`` (with a warning) for a model that does not run on ``input_ids`` alone.
    """
    vocab_size = int(getattr(model.config, "vocab_size", 0) or 2)
    input_ids = (torch.arange(PROBE_LENGTH) * 7 + 1).remainder(vocab_size)[None, :]  # (1, T)
    kwargs = {"input_ids": input_ids.to(_device(model))}
    if getattr(model.config, "is_encoder_decoder", False):
        kwargs["decoder_input_ids"] = kwargs["input_ids"]
    try:
        with torch.no_grad():
            output = model(**kwargs)
    except (TypeError, ValueError, RuntimeError) as err:
        logger.warning("Could not run the probe input through %s (%s).", type(model).__name__, err)
        return None
    tensor = getattr(output, "logits", None)
    if tensor is None:
        tensor = getattr(output, "last_hidden_state", None)
    return None if tensor is None else tensor.detach().float().cpu()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def unmerged_adapters(model: nn.Module, adapters: Sequence[Adapter], weights: Sequence[float]) -> Iterator[None]:
    """Apply ``sum_i w_i * delta_i`` and the module copies with forward hooks, without changing weights.

    This runs the adapters on top of the layers as they are, quantized ones included.
    """
    handles = []
    try:
        for path in dict.fromkeys(p for a in adapters for p in a.modules):
            terms = module_terms(adapters, weights, path)
            if terms:
                handles.append(_lora_hook(find_module(model, path), terms))
        for path in dict.fromkeys(p for a in adapters for p in a.module_copies if not is_embedding_base_copy(p)):
            handles.append(_copy_hook(find_module(model, path), adapters, weights, path))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _lora_hook(module: nn.Module, terms) -> torch.utils.hooks.RemovableHandle:
    lora_B, lora_A = concatenate(terms)  # (out, R), (R, in)
    bias = combined_bias(terms)
    is_embedding = layer_shape(module)[0] == "embedding"

    def add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if is_embedding:
            extra = F.embedding(x, lora_A.T.to(x.device)) @ lora_B.T.to(x.device)  # (..., R) -> (..., dim)
        else:
            extra = (x.float() @ lora_A.T.to(x.device)) @ lora_B.T.to(x.device)  # (..., R) -> (..., out)
        if bias is not None:
            extra = extra + bias.to(x.device)
        return output + extra.to(output.dtype)

    return module.register_forward_hook(add_delta)


def _copy_hook(module: nn.Module, adapters: Sequence[Adapter], weights: Sequence[float], path: str):
    base = module.state_dict()
    combined = combine_module_copies([a.module_copies.get(path) for a in adapters], weights, base, path=path)
    parameters = {**base, **(combined or {})}
    inside = [False]  # functional_call runs the module again, which must not re-enter this hook

    def replace_output(module: nn.Module, args: tuple, kwargs: dict, output):
        if inside[0]:
            return None
        inside[0] = True
        try:
            return torch.func.functional_call(module, parameters, args, kwargs)
        finally:
            inside[0] = False

    return module.register_forward_hook(replace_output, with_kwargs=True)
