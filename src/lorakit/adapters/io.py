"""Reading and writing PEFT LoRA adapter folders.

A folder holds ``adapter_config.json`` and ``adapter_model.safetensors``; keys look
like ``base_model.model.<module path>.lora_A.weight``. Full module copies
(``modules_to_save``) are stored as ``base_model.model.<module path>.<param>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lorakit.adapters.config import check_supported, module_scaling
from lorakit.adapters.model import Adapter, LoraModule, is_embedding_base_copy
from lorakit.errors import AdapterFormatError, OutputExistsError, UnsafeFileError
from lorakit.publish import publish_folder

logger = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
LABELS_NAME = "labels.json"  # class names of a sequence classifier; PEFT does not read this file
PEFT_PREFIX = "base_model.model."

_LORA_SUFFIXES = {
    ".lora_A.weight": "lora_A",
    ".lora_B.weight": "lora_B",
    ".lora_B.bias": "lora_bias",
    ".lora_embedding_A": "lora_A",
    ".lora_embedding_B": "lora_B",
}
_DORA_SUFFIX = ".lora_magnitude_vector"
# safetensors' dtype names (the header's "dtype" field) for the dtypes adapters are saved in.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_EMBEDDING_COPY_SUFFIX = ".base_layer.weight"


def read_adapter(
    path: str | os.PathLike,
    name: str | None = None,
    *,
    trust_pickle: bool = False,
    device: str | torch.device = "cpu",
    shapes_only: bool = False,
) -> Adapter:
    """Read a PEFT LoRA adapter folder (or a hub repository id) into an :class:`Adapter`.

    Args:
        path: A local folder, or a hub id such as ``"user/my-adapter"`` (needs a network).
        name: The name to give the adapter; the folder name by default.
        trust_pickle: Allow reading ``adapter_model.bin``, a pickle file that can run
            code when loaded. Only pass it for files whose origin you trust.
        device: Where to put the tensors.
        shapes_only: Read only the safetensors header, so the tensors are on the
            ``meta`` device, with shapes and dtypes but no values. Checking an adapter's
            shapes against a model this way reads none of its weights. A pickle file is
            read whole.

    Raises:
        AdapterFormatError: The folder is missing, incomplete, corrupt or not a LoRA adapter.
        UnsafeFileError: Only a pickle file is present and ``trust_pickle`` is false.
        UnsupportedAdapterError: The adapter uses a variant such as DoRA.
    """
    folder = _local_folder(path)
    config = {**_read_config(folder), **read_labels(folder)}
    source = str(folder)
    check_supported(config, source)
    state_dict = _read_weights(folder, trust_pickle=trust_pickle, device=device, shapes_only=shapes_only)
    if not state_dict:
        raise AdapterFormatError(f"{folder / SAFETENSORS_NAME} holds no tensors; the adapter is empty.")
    adapter = adapter_from_state_dict(state_dict, config, name=name or folder.name, source=source)
    adapter.source = folder
    return adapter


def _local_folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise AdapterFormatError(
            f"Adapter path {str(folder)!r} is a file; pass the folder that contains {CONFIG_NAME}."
        )
    text = str(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return _download_from_hub(text)
    raise AdapterFormatError(f"Adapter folder {text!r} does not exist.")


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id, allow_patterns=[CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME])
    except Exception as err:  # huggingface_hub raises many types for offline, missing and private repos
        raise AdapterFormatError(
            f"Adapter {repo_id!r} is not a local folder, and downloading it from the Hugging Face hub "
            f"failed ({type(err).__name__}: {err}). Pass a local adapter folder, or check the name and network."
        ) from err
    return Path(local)


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise AdapterFormatError(
            f"{folder} is not an adapter folder: {CONFIG_NAME} is missing "
            f"(found: {', '.join(sorted(p.name for p in folder.iterdir())) or 'nothing'})."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFormatError(f"{config_path} is not valid JSON: {err}.") from err
    if not isinstance(config, dict):
        raise AdapterFormatError(f"{config_path} must hold a JSON object, not {type(config).__name__}.")
    return config


def read_labels(folder: Path) -> dict[str, Any]:
    """Return ``{"id2label": ..., "label2id": ...}`` from the folder's ``labels.json``, or ``{}`` without one.

    Raises:
        AdapterFormatError: ``labels.json`` is not a JSON object whose ``id2label`` maps class ids to names.
    """
    path = folder / LABELS_NAME
    if not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFormatError(f"{path} is not valid JSON: {err}.") from err
    id2label = labels.get("id2label") if isinstance(labels, dict) else None
    if not isinstance(id2label, dict) or not all(str(key).isdigit() for key in id2label):
        raise AdapterFormatError(
            f"{path} must contain an object like {{\"id2label\": {{\"0\": \"negative\", \"1\": \"positive\"}}}}."
        )
    id2label = {str(key): str(name) for key, name in id2label.items()}
    return {"id2label": id2label, "label2id": {name: int(key) for key, name in id2label.items()}}


def write_labels(folder: Path, labels: dict[str, Any]) -> None:
    """Write the ``id2label`` of ``labels`` (and its inverse) to ``folder / labels.json``.

    The class names of a sequence-classification adapter live in this file, not in
    ``adapter_config.json``, because PEFT warns about keys its ``LoraConfig`` does not have.
    """
    id2label = {str(key): str(name) for key, name in labels["id2label"].items()}
    content = {"id2label": id2label, "label2id": {name: int(key) for key, name in id2label.items()}}
    (folder / LABELS_NAME).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _read_weights(
    folder: Path, *, trust_pickle: bool, device: str | torch.device, shapes_only: bool = False
) -> dict[str, torch.Tensor]:
    safetensors_path = folder / SAFETENSORS_NAME
    pickle_path = folder / PICKLE_NAME
    if safetensors_path.is_file():
        try:
            if shapes_only:
                return _read_header(safetensors_path)
            return load_file(safetensors_path, device=str(device))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterFormatError(f"{safetensors_path} is not a readable safetensors file: {err}.") from err
    if pickle_path.is_file():
        if not trust_pickle:
            raise UnsafeFileError(
                f"{folder} stores its weights only as {PICKLE_NAME}, a pickle file that can run code when "
                "loaded. If you trust its origin, pass trust_pickle=True (--trust-pickle on the command line), "
                "or convert it to safetensors."
            )
        try:
            return torch.load(pickle_path, map_location=device, weights_only=True)
        except Exception as err:  # torch.load raises UnpicklingError, RuntimeError, EOFError...
            raise AdapterFormatError(f"{pickle_path} could not be read: {err}.") from err
    raise AdapterFormatError(f"{folder} has {CONFIG_NAME} but no {SAFETENSORS_NAME} (nor {PICKLE_NAME}).")


def _read_header(path: Path) -> dict[str, torch.Tensor]:
    """Return the tensors of a safetensors file as ``meta`` tensors of the right shapes and dtypes."""
    tensors = {}
    with safe_open(path, framework="pt") as handle:
        for key in handle.keys():
            info = handle.get_slice(key)
            dtype = _SAFETENSORS_DTYPES.get(info.get_dtype())
            if dtype is None:
                return load_file(path)  # a dtype this table lacks: read the values too, with safetensors' mapping
            tensors[key] = torch.empty(info.get_shape(), dtype=dtype, device="meta")
    return tensors


def adapter_from_state_dict(
    state_dict: dict[str, torch.Tensor], config: dict[str, Any], name: str, source: str = "adapter"
) -> Adapter:
    """Group a PEFT flat state dict into an :class:`Adapter`.

    Raises:
        AdapterFormatError: Keys that are neither LoRA factors nor module copies, a
            factor without its partner, or factors whose rank disagrees with the config.
        UnsupportedAdapterError: DoRA magnitude vectors.
    """
    factors: dict[str, dict[str, torch.Tensor]] = {}
    kinds: dict[str, str] = {}
    copies: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    modules_to_save = list(config.get("modules_to_save") or [])
    for key, tensor in state_dict.items():
        path = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        if path.endswith(_DORA_SUFFIX):
            from lorakit.errors import UnsupportedAdapterError

            raise UnsupportedAdapterError(
                f"{source} holds DoRA magnitude vectors ({key}); lorakit applies plain LoRA only and never "
                "applies DoRA approximately. Use PEFT for this adapter."
            )
        suffix = next((s for s in _LORA_SUFFIXES if path.endswith(s)), None)
        if suffix is not None:
            module_path = path[: -len(suffix)]
            factors.setdefault(module_path, {})[_LORA_SUFFIXES[suffix]] = tensor
            kinds[module_path] = "embedding" if "embedding" in suffix else "linear"
        elif path.endswith(_EMBEDDING_COPY_SUFFIX):
            # PEFT saves the whole embedding beside an embedding LoRA; the runtime checks it
            # against the base model (it must be identical unless the vocabulary changed).
            copies.setdefault(path[: -len(_EMBEDDING_COPY_SUFFIX)] + ".base_layer", {})["weight"] = tensor
        elif (copy := _split_module_copy(path, modules_to_save)) is not None:
            module_path, parameter = copy
            copies.setdefault(module_path, {})[parameter] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise AdapterFormatError(
            f"{source} holds {len(unknown)} keys that are neither LoRA factors nor modules_to_save copies: "
            f"{_few(unknown)}. Is this a LoRA adapter saved by PEFT?"
        )
    modules = {path: _build_module(path, parts, kinds[path], config, source) for path, parts in factors.items()}
    return Adapter(name=name, config=dict(config), modules=modules, module_copies=copies)


def _split_module_copy(path: str, modules_to_save: list[str]) -> tuple[str, str] | None:
    """Split ``<module path>.<parameter name>`` for a module listed in ``modules_to_save``.

    The parameter name may itself hold dots when the copied module has submodules
    (RoBERTa's ``classifier.dense.weight``).
    """
    path = path.replace(".modules_to_save.", ".")  # older PEFT versions kept the wrapper's name
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        module_path = ".".join(parts[:end])
        for wanted in modules_to_save:
            if module_path == wanted or module_path.endswith("." + wanted):
                return module_path, ".".join(parts[end:])
    return None


def _build_module(
    path: str, parts: dict[str, torch.Tensor], kind: str, config: dict[str, Any], source: str
) -> LoraModule:
    missing = [p for p in ("lora_A", "lora_B") if p not in parts]
    if missing:
        raise AdapterFormatError(f"{source}: module {path!r} has no {' or '.join(missing)} tensor.")
    lora_A, lora_B = parts["lora_A"], parts["lora_B"]
    if lora_A.ndim != 2 or lora_B.ndim != 2 or lora_A.shape[0] != lora_B.shape[1]:
        raise AdapterFormatError(
            f"{source}: module {path!r} has factors of shapes {tuple(lora_A.shape)} and {tuple(lora_B.shape)}; "
            "expected lora_A (r, in) and lora_B (out, r) with the same r."
        )
    r, scaling = module_scaling(config, path)
    if lora_A.shape[0] != r:
        raise AdapterFormatError(
            f"{source}: module {path!r} has rank {lora_A.shape[0]} in its tensors but r={r} in its config "
            "(r and rank_pattern); the scaling would be wrong. Fix rank_pattern in adapter_config.json."
        )
    return LoraModule(
        lora_A=lora_A,
        lora_B=lora_B,
        scaling=scaling,
        kind=kind,  # type: ignore[arg-type]
        lora_bias=parts.get("lora_bias"),
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)) and kind == "linear",
    )


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def peft_state_dict(adapter: Adapter) -> dict[str, torch.Tensor]:
    """Return the adapter as PEFT's flat state dict (contiguous tensors)."""
    state: dict[str, torch.Tensor] = {}
    for path, module in adapter.modules.items():
        if module.kind == "embedding":
            state[f"{PEFT_PREFIX}{path}.lora_embedding_A"] = module.lora_A
            state[f"{PEFT_PREFIX}{path}.lora_embedding_B"] = module.lora_B
        else:
            state[f"{PEFT_PREFIX}{path}.lora_A.weight"] = module.lora_A
            state[f"{PEFT_PREFIX}{path}.lora_B.weight"] = module.lora_B
            if module.lora_bias is not None:
                state[f"{PEFT_PREFIX}{path}.lora_B.bias"] = module.lora_bias
    for path, copy in adapter.module_copies.items():
        if is_embedding_base_copy(path):
            continue  # equal to the base model's embedding (checked on load), so not needed to reload
        for parameter, tensor in copy.items():
            state[f"{PEFT_PREFIX}{path}.{parameter}"] = tensor
    return {key: tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}


def config_for_writing(adapter: Adapter) -> dict[str, Any]:
    """Return a config that reproduces every module's rank and scaling when PEFT or lorakit reads it.

    The adapter's own config is kept when it already resolves to the stored ranks and
    scalings; otherwise ``r``, ``lora_alpha``, ``rank_pattern`` and ``alpha_pattern`` are
    rewritten from the modules, with rsLoRA off (each scaling becomes an explicit alpha).
    """
    config = {key: value for key, value in adapter.config.items() if key not in ("id2label", "label2id")}
    config.setdefault("peft_type", "LORA")
    if not _targets_cover_modules(config.get("target_modules"), list(adapter.modules)):
        config["target_modules"] = sorted({path.rsplit(".", 1)[-1] for path in adapter.modules})
    copy_paths = [p for p in adapter.module_copies if not is_embedding_base_copy(p)]
    config["modules_to_save"] = copy_paths or None
    config["lora_bias"] = any(m.lora_bias is not None for m in adapter.modules.values())
    config["fan_in_fan_out"] = any(m.fan_in_fan_out for m in adapter.modules.values())
    config["inference_mode"] = True
    if _config_matches_modules(config, adapter):
        return config
    ranks = Counter(module.r for module in adapter.modules.values())
    r = ranks.most_common(1)[0][0] if ranks else 8
    config.update(r=r, lora_alpha=float(r), use_rslora=False, rank_pattern={}, alpha_pattern={})
    for path, module in adapter.modules.items():
        key = re.escape(path)
        if module.r != r:
            config["rank_pattern"][key] = module.r
        alpha = module.scaling * module.r  # scaling = alpha / r without rsLoRA
        if alpha != float(r):
            config["alpha_pattern"][key] = alpha
    return config


def _targets_cover_modules(target_modules: Any, paths: list[str]) -> bool:
    """Tell whether PEFT would inject LoRA into every module path under ``target_modules``."""
    if not target_modules:
        return False
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            return True
        return all(re.fullmatch(target_modules, path) for path in paths)
    names = set(target_modules)
    return all(path in names or path.rsplit(".", 1)[-1] in names for path in paths)


def _config_matches_modules(config: dict[str, Any], adapter: Adapter) -> bool:
    for path, module in adapter.modules.items():
        r, scaling = module_scaling(config, path)
        if r != module.r or scaling != module.scaling:
            return False
    return True


def write_adapter(adapter: Adapter, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``adapter`` as a PEFT folder, atomically.

    Files are written to a temporary folder beside ``path`` and renamed into place,
    so a failure leaves no half-written adapter.

    Args:
        adapter: The adapter to write.
        path: The output folder.
        overwrite: Replace an existing folder at ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"Output folder {str(target)!r} already exists; choose another path or pass overwrite=True (--overwrite)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(peft_state_dict(adapter), staging / SAFETENSORS_NAME, metadata={"format": "pt"})
        config = config_for_writing(adapter)
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if adapter.config.get("id2label"):
            write_labels(staging, adapter.config)
        publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.debug("Wrote adapter %r to %s", adapter.name, target)
    return target
