"""lorakit: load, combine, route, merge and train many LoRA adapters on one base model."""

from lorakit.adapters import Adapter, LoraModule, read_adapter, write_adapter
from lorakit.errors import (
    AdapterFormatError,
    AdapterMismatchError,
    AdapterNotFoundError,
    LorakitError,
    MergeError,
    OutputExistsError,
    RoutingError,
    UnsafeFileError,
    UnsupportedAdapterError,
)
from lorakit.runtime import MultiAdapterModel, runtime_of

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AdapterFormatError",
    "AdapterMismatchError",
    "AdapterNotFoundError",
    "LoraModule",
    "LorakitError",
    "MergeError",
    "MultiAdapterModel",
    "OutputExistsError",
    "RoutingError",
    "UnsafeFileError",
    "UnsupportedAdapterError",
    "read_adapter",
    "runtime_of",
    "write_adapter",
]
