"""lorakit: load, combine, route, merge and train many LoRA adapters on one base model."""

from lorakit.adapters import Adapter, LoraModule, read_adapter, write_adapter
from lorakit.combine import CombineReport, combine_adapters, combine_folders
from lorakit.compare import compare_adapters, compare_folders
from lorakit.errors import (
    AdapterFormatError,
    AdapterMismatchError,
    AdapterNotFoundError,
    CombineError,
    LorakitError,
    MergeError,
    ModelLoadError,
    OutputExistsError,
    RoutingError,
    TrainingConfigError,
    UnsafeFileError,
    UnsupportedAdapterError,
)
from lorakit.merge import fold_adapters, merge_to_folder
from lorakit.runtime import MultiAdapterModel, runtime_of

__version__ = "0.1.0"

# Training pulls in transformers' Trainer, which is slow to import, so it loads on first use.
# The training function itself is ``lorakit.train.train``: ``lorakit.train`` is its subpackage.
_LAZY = {"TrainConfig": "lorakit.train", "TrainResult": "lorakit.train"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lorakit' has no attribute {name!r}")


__all__ = [
    "Adapter",
    "AdapterFormatError",
    "AdapterMismatchError",
    "AdapterNotFoundError",
    "CombineError",
    "CombineReport",
    "LoraModule",
    "LorakitError",
    "MergeError",
    "ModelLoadError",
    "MultiAdapterModel",
    "OutputExistsError",
    "RoutingError",
    "TrainConfig",
    "TrainResult",
    "TrainingConfigError",
    "UnsafeFileError",
    "UnsupportedAdapterError",
    "combine_adapters",
    "combine_folders",
    "compare_adapters",
    "compare_folders",
    "fold_adapters",
    "merge_to_folder",
    "read_adapter",
    "runtime_of",
    "write_adapter",
]
