"""Summaries of adapter folders for ``lorakit inspect``."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from lorakit.adapters.io import PICKLE_NAME, SAFETENSORS_NAME, read_adapter
from lorakit.adapters.model import Adapter, scaling_for


def summarize_adapter(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Return what ``lorakit inspect`` shows about one adapter folder, as plain JSON types."""
    adapter = read_adapter(path, trust_pickle=trust_pickle)
    folder = Path(adapter.source or path)
    weights = folder / SAFETENSORS_NAME
    if not weights.is_file():
        weights = folder / PICKLE_NAME
    return {
        "path": str(folder),
        "name": adapter.name,
        "base_model": adapter.base_model_name_or_path,
        "task_type": adapter.task_type,
        "target_modules": _targets(adapter),
        "num_modules": len(adapter.modules),
        "rank": _rank_summary(adapter),
        "lora_alpha": adapter.config.get("lora_alpha"),
        "alpha_pattern": adapter.config.get("alpha_pattern") or {},
        "scaling_rule": "lora_alpha / sqrt(r) (rsLoRA)" if adapter.config.get("use_rslora") else "lora_alpha / r",
        "scaling": _scaling_summary(adapter),
        "lora_bias": any(m.lora_bias is not None for m in adapter.modules.values()),
        "trainable_parameters": adapter.num_parameters(),
        "file_size_bytes": weights.stat().st_size,
        "modules_to_save": sorted(p for p in adapter.module_copies if not p.endswith(".base_layer")),
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "labels": adapter.config.get("id2label"),
    }


def _targets(adapter: Adapter) -> Any:
    configured = adapter.config.get("target_modules")
    leaf_names = sorted({path.rsplit(".", 1)[-1] for path in adapter.modules})
    return {"configured": sorted(configured) if isinstance(configured, list) else configured, "modules": leaf_names}


def _rank_summary(adapter: Adapter) -> dict[str, Any]:
    """Return the config's ``r`` and the modules whose rank differs from it (``rank_pattern``)."""
    ranks = adapter.ranks()
    default = adapter.config.get("r")
    if default is None and ranks:
        default = Counter(ranks.values()).most_common(1)[0][0]
    return {"r": default, "per_module": {path: r for path, r in ranks.items() if r != default}}


def _scaling_summary(adapter: Adapter) -> dict[str, Any]:
    """Return the scaling of the config's ``r`` and ``lora_alpha``, and the modules that differ."""
    config = adapter.config
    if not adapter.modules:
        return {}
    if config.get("r") and config.get("lora_alpha") is not None:
        default = scaling_for(float(config["lora_alpha"]), int(config["r"]), bool(config.get("use_rslora")))
    else:
        default = Counter(m.scaling for m in adapter.modules.values()).most_common(1)[0][0]
    per_module = {p: m.scaling for p, m in adapter.modules.items() if not math.isclose(m.scaling, default)}
    return {"common": default, "per_module": per_module}
