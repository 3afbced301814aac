"""Classifier heads that adapters carry, and quieting transformers' report of the base model's new head."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import transformers

from lorakit.adapters.model import Adapter

# Attribute names of a sequence classifier's head, as PEFT looks for them.
HEAD_NAMES = ("classifier", "score")


def carries_head(adapter: Adapter) -> bool:
    """Tell whether ``adapter`` saves its own classifier head (``classifier`` or ``score`` in ``modules_to_save``)."""
    return any(path.rsplit(".", 1)[-1] in HEAD_NAMES for path in adapter.module_copies)


@contextmanager
def new_head_report_quiet(adapters: Iterable[Adapter]) -> Iterator[None]:
    """Hide transformers' warning that the base model's head is newly initialised, when every adapter brings one.

    Loading a sequence classifier from a checkpoint without a head prints a report
    that the head is "MISSING" and should be trained. That advice is wrong when each
    adapter replaces the head with its own trained copy.
    """
    adapters = list(adapters)
    if not adapters or not all(carries_head(adapter) for adapter in adapters):
        yield
        return
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
