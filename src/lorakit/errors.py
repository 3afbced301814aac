"""Exceptions that lorakit raises for bad input and failed operations.

Every error names the offending value, what was expected, and how to fix it.
Library code raises these; only the command line turns them into exit codes.
"""

from __future__ import annotations


class LorakitError(Exception):
    """Base class of every error lorakit raises on purpose."""


class AdapterFormatError(LorakitError):
    """An adapter folder or file is missing, corrupt, or not a LoRA adapter."""


class UnsupportedAdapterError(LorakitError):
    """An adapter uses a LoRA variant that lorakit cannot apply exactly (DoRA, say)."""


class UnsafeFileError(LorakitError):
    """An adapter stores pickle weights and the caller did not pass a trust flag."""


class AdapterMismatchError(LorakitError):
    """An adapter does not fit the base model: unmatched keys, shapes or vocabulary size."""


class AdapterNotFoundError(LorakitError, KeyError):
    """An adapter name is not loaded."""

    def __str__(self) -> str:  # KeyError would quote the whole message.
        return str(self.args[0]) if self.args else ""


class RoutingError(LorakitError):
    """A per-row routing request names unknown adapters or has the wrong length."""


class MergeError(LorakitError):
    """A merge or unmerge cannot be done without harming the base weights."""


class OutputExistsError(LorakitError):
    """An output folder already exists and overwriting was not requested."""


class AssetNotFoundError(LorakitError):
    """A packaged model or data set is not installed."""


class TrainingConfigError(LorakitError):
    """A training run's settings or data are invalid: option values, columns, labels or target modules."""


class CombineError(LorakitError):
    """Adapters cannot be combined as requested: bad weights, options, shapes or module copies."""


class ModelLoadError(LorakitError):
    """A base model cannot be loaded from the given name or path, or in the class its adapters need."""
