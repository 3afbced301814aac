"""The ``lorakit_combine.json`` record written inside every combined adapter folder.

It stores what is needed to reproduce and audit the result: each input's path and
SHA-256 checksums, the method and its settings (the seed included), and each
module's rank and relative error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lorakit.adapters.model import Adapter
from lorakit.combine.api import CombineReport

RECORD_NAME = "lorakit_combine.json"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_input(adapter: Adapter) -> dict[str, Any]:
    """Return an adapter's name, folder and the SHA-256 of each of its files.

    An adapter built in memory (no ``source`` folder) gets no checksums.
    """
    entry: dict[str, Any] = {"name": adapter.name, "path": None, "sha256": {}}
    if adapter.source is not None:
        folder = Path(adapter.source)
        entry["path"] = str(folder.resolve())
        for file_name in _ADAPTER_FILES:
            if (folder / file_name).is_file():
                entry["sha256"][file_name] = file_sha256(folder / file_name)
    return entry


def build_record(report: CombineReport, adapters: list[Adapter]) -> dict[str, Any]:
    """Return the record of one combination as a JSON-ready dict."""
    return {
        "lorakit_version": _lorakit_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [describe_input(adapter) for adapter in adapters],
        **report.to_dict(),
    }


def _lorakit_version() -> str:
    try:
        return importlib.metadata.version("lorakit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_record(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``lorakit_combine.json`` inside ``folder``."""
    path = Path(folder) / RECORD_NAME
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def read_record(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the ``lorakit_combine.json`` of a combined adapter folder."""
    return json.loads((Path(folder) / RECORD_NAME).read_text(encoding="utf-8"))
