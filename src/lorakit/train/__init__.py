"""Training LoRA adapters on datasets, alone or on top of frozen adapters.

:func:`train` is the Python form of ``lorakit train``; both take the fields of
:class:`TrainConfig`.
"""

from lorakit.train.config import StackEntry, TrainConfig, load_config
from lorakit.train.trainer import TrainResult, train

__all__ = ["StackEntry", "TrainConfig", "TrainResult", "load_config", "train"]
