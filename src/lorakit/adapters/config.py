"""Reading ``adapter_config.json``: LoRA variants, per-module ranks and scalings."""

from __future__ import annotations

from typing import Any

from lorakit.adapters.model import scaling_for
from lorakit.errors import AdapterFormatError, UnsupportedAdapterError

# Initialisations that change the base weights when the adapter is created. An adapter
# saved from them is only valid on that changed base unless PEFT converted it at save
# time (``path_initial_model_for_weight_conversion``), which writes ``init_lora_weights: true``.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")

# Config fields whose non-empty value means a variant that lorakit cannot apply exactly.
_UNSUPPORTED_FIELDS = {
    "use_dora": "DoRA (weight-decomposed LoRA) rescales each weight column by a learned magnitude",
    "use_qalora": "QA-LoRA pools the input in groups before lora_A",
    "layer_replication": "layer replication duplicates base layers",
    "alora_invocation_tokens": "activated LoRA applies the adapter only after invocation tokens",
    "trainable_token_indices": "trainable tokens replace rows of the embedding",
    "target_parameters": "targeting parameters (MoE experts) wraps nn.Parameter, not modules",
    "use_bdlora": "block-diagonal LoRA shards the factors",
    "arrow_config": "Arrow routing mixes adapters per token",
    "kasa_config": "KaSA adds a singular-value adapter",
    "monteclora_config": "MonteCLoRA samples its factors",
    "velora_config": "VeLoRA compresses activations",
    "megatron_config": "Megatron parallel layers",
}


def check_supported(config: dict[str, Any], source: str) -> None:
    """Raise if the config describes something other than plain LoRA that lorakit applies exactly.

    Args:
        config: The parsed ``adapter_config.json``.
        source: Where the config came from, for the message.

    Raises:
        AdapterFormatError: Not a LoRA adapter.
        UnsupportedAdapterError: A LoRA variant lorakit does not apply.
    """
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterFormatError(
            f"{source} is a {peft_type} adapter; lorakit reads LoRA adapters only (peft_type 'LORA')."
        )
    problems = [
        f"{field_name}={config[field_name]!r} ({why})"
        for field_name, why in _UNSUPPORTED_FIELDS.items()
        if config.get(field_name)
    ]
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(
            f"init_lora_weights={init!r} (this initialisation changes the base weights; convert the adapter "
            "with PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) first)"
        )
    if config.get("bias", "none") != "none":
        problems.append(
            f"bias={config['bias']!r} (the base model's biases were trained and would change for every adapter; "
            "retrain with bias='none' or lora_bias=True)"
        )
    if problems:
        raise UnsupportedAdapterError(
            f"{source} uses LoRA variants that lorakit cannot apply exactly: {'; '.join(problems)}. "
            "lorakit never applies a variant approximately; use PEFT for this adapter."
        )


def module_rank_and_alpha(config: dict[str, Any], module_path: str) -> tuple[int, float]:
    """Return the configured ``(r, lora_alpha)`` of one module, honouring the patterns as PEFT does."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    r = config.get("r", 8)
    alpha = config.get("lora_alpha", 8)
    if not rank_pattern and not alpha_pattern:
        return int(r), float(alpha)
    from peft.utils.other import get_pattern_key  # imports all of peft, so only for an adapter with patterns

    rank_key = get_pattern_key(list(rank_pattern), module_path)
    alpha_key = get_pattern_key(list(alpha_pattern), module_path)
    return int(rank_pattern.get(rank_key, r)), float(alpha_pattern.get(alpha_key, alpha))


def module_scaling(config: dict[str, Any], module_path: str) -> tuple[int, float]:
    """Return the configured rank and the scaling of one module."""
    r, alpha = module_rank_and_alpha(config, module_path)
    return r, scaling_for(alpha, r, bool(config.get("use_rslora", False)))
