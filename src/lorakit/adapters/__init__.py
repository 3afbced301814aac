"""Adapter files: read, write, validate and inspect PEFT LoRA folders."""

from lorakit.adapters.io import read_adapter, write_adapter
from lorakit.adapters.model import Adapter, LoraModule

__all__ = ["Adapter", "LoraModule", "read_adapter", "write_adapter"]
