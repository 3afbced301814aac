"""Saving adapters out of a runtime, and restoring several adapters from one folder.

A folder written by :func:`save_adapters` holds one PEFT adapter folder per adapter
and ``lorakit_adapters.json`` with the names and the active stack. PEFT's own
multi-adapter layout (the ``default`` adapter at the top, others in subfolders) is
read too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lorakit.adapters.io import CONFIG_NAME, write_adapter
from lorakit.adapters.model import Adapter
from lorakit.errors import AdapterFormatError, OutputExistsError
from lorakit.publish import publish_folder

if TYPE_CHECKING:
    from lorakit.runtime.model import MultiAdapterModel

logger = logging.getLogger(__name__)

MANIFEST_NAME = "lorakit_adapters.json"


def export_adapter(runtime: MultiAdapterModel, name: str) -> Adapter:
    """Return adapter ``name`` as an :class:`Adapter` holding the runtime's current tensors."""
    record = runtime.record(name)
    modules = {
        path: runtime._lora_layers[path].export(name, record.fan_in_fan_out.get(path, False))
        for path in record.module_paths
    }
    copies = {
        path: {n: p.detach() for n, p in runtime._copy_layers[path].copies[name].named_parameters()}
        for path in record.copy_paths
    }
    return Adapter(name=name, config=dict(record.config), modules=modules, module_copies=copies)


def save_adapters(runtime: MultiAdapterModel, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write every loaded adapter and the active stack to ``folder``, atomically."""
    target = Path(folder).expanduser()
    if target.exists() and not overwrite:
        raise OutputExistsError(f"Output folder {str(target)!r} already exists; pass overwrite=True (--overwrite).")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in runtime.adapters:
            write_adapter(export_adapter(runtime, name), staging / name)
        manifest = {"format": 1, "adapters": runtime.adapters, "active": runtime.active}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        publish_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_adapters(
    runtime: MultiAdapterModel, folder: str | os.PathLike, *, trust_pickle: bool = False
) -> list[str]:
    """Load every adapter stored in ``folder`` and restore the active stack it records.

    Returns:
        The names loaded. Subfolders that are not adapters are skipped with a warning.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AdapterFormatError(f"Adapter folder {str(root)!r} does not exist.")
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = [(name, root / name) for name in manifest["adapters"]]
        active = manifest.get("active") or None
    else:
        entries = [("default", root)] if (root / CONFIG_NAME).is_file() else []
        entries += [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG_NAME).is_file()]
        skipped = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not (p / CONFIG_NAME).is_file()]
        if skipped:
            logger.warning("Skipped subfolders of %s without %s: %s", root, CONFIG_NAME, ", ".join(skipped))
        active = None
    if not entries:
        raise AdapterFormatError(f"{root} holds no adapter ({CONFIG_NAME} at the top or in subfolders).")
    loaded = runtime.load_adapters(dict(entries), trust_pickle=trust_pickle)
    try:
        if active:
            runtime.activate(active)
    except BaseException:
        for name in loaded:
            runtime.unload_adapter(name)
        raise
    return loaded
