"""The multi-adapter runtime: load, activate, stack, route, merge and unmerge."""

from lorakit.runtime.model import MultiAdapterModel, runtime_of

__all__ = ["MultiAdapterModel", "runtime_of"]
