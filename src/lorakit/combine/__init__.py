"""Combine adapters into a new adapter: one function per method, behind a registry.

Every method works on the true deltas ``scaling_i * B_i @ A_i`` of each target
module, not on ``A`` and ``B`` separately, and reports the relative error of any
truncation to a lower rank.
"""

from lorakit.combine.api import CombineReport, ModuleReport, combine_adapters
from lorakit.combine.folders import combine_folders
from lorakit.combine.record import RECORD_NAME, read_record
from lorakit.combine.registry import METHODS, get_method, method_names
from lorakit.combine.types import CombineMethod

__all__ = [
    "METHODS",
    "RECORD_NAME",
    "CombineMethod",
    "CombineReport",
    "ModuleReport",
    "combine_adapters",
    "combine_folders",
    "get_method",
    "method_names",
    "read_record",
]
