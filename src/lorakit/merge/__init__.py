"""Merge adapters into a base model's weights and write the result as a transformers folder."""

from lorakit.merge.folder import AdapterSpec, MergeReport, merge_quantized, merge_to_folder
from lorakit.merge.folding import FoldReport, fold_adapters
from lorakit.merge.loading import load_base_model
from lorakit.merge.quantized import quantization_method

__all__ = [
    "AdapterSpec",
    "FoldReport",
    "MergeReport",
    "fold_adapters",
    "load_base_model",
    "merge_quantized",
    "merge_to_folder",
    "quantization_method",
]
