"""Logging configuration for the command line; the library only creates loggers."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Configure the ``lorakit`` logger for a command-line run.

    Args:
        verbose: 0 for INFO, 1 or more for DEBUG.
        quiet: Show only warnings and errors, and turn off progress bars.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    # Logs go to stderr so that results on stdout (JSON, JSON Lines) stay machine-readable.
    handler = RichHandler(
        console=Console(stderr=True), show_time=False, show_path=verbose > 0, markup=False, rich_tracebacks=False
    )
    root = logging.getLogger("lorakit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if quiet:
        # tqdm (used by datasets and transformers) and lorakit's own bars read this.
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    # transformers and datasets are loud at INFO; keep them at WARNING unless -vv.
    if verbose < 2:
        for name in ("transformers", "datasets", "peft", "accelerate"):
            logging.getLogger(name).setLevel(logging.WARNING)
