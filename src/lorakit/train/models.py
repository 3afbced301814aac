"""Loading the base model and tokenizer, and making the model that the Trainer trains.

Without a stack, the new adapter is a PEFT ``LoraModel`` (``get_peft_model``). With a
stack, the base model is wrapped by lorakit's runtime: the stacked adapters are loaded
frozen, the new one is added trainable, and all of them are activated, the new one at
weight 1.0. The model trained is then exactly the model the runtime computes when the
same stack and the new adapter are loaded for inference.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from lorakit.adapters.heads import HEAD_NAMES
from lorakit.adapters.io import SAFETENSORS_NAME, read_adapter, write_labels
from lorakit.errors import AdapterFormatError, TrainingConfigError
from lorakit.publish import set_default_permissions
from lorakit.train.config import StackEntry, TrainConfig

logger = logging.getLogger(__name__)

_TASK_TYPES = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}


def load_tokenizer(model_path: str) -> Any:
    """Load the tokenizer of ``model_path``, giving it a pad token (its EOS token) if it has none."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise TrainingConfigError(
            f"Cannot load a tokenizer from --model {model_path!r}: {err}. Pass a model folder that includes "
            "its tokenizer, a hub name (needs a network), or minilm / smollm2."
        ) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TrainingConfigError(
                f"The tokenizer of {model_path!r} has neither a pad nor an EOS token; batches cannot be padded."
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("The tokenizer has no pad token; padding with its EOS token %r", tokenizer.eos_token)
    return tokenizer


def load_base_model(model_path: str, task: str, label_names: list[str] | None, pad_token_id: int | None) -> PreTrainedModel:
    """Load the base model in float32: a sequence classifier with ``len(label_names)`` classes, or a causal LM.

    The classifier head of a sequence classifier is initialised from the current
    torch seed when the checkpoint has none of this size.
    """
    try:
        if task == "seq-cls":
            if label_names is None:
                raise ValueError("label_names is required for task 'seq-cls'")
            model = AutoModelForSequenceClassification.from_pretrained(
                model_path,
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id={name: index for index, name in enumerate(label_names)},
                ignore_mismatched_sizes=True,
                dtype=torch.float32,
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise TrainingConfigError(f"Cannot load --model {model_path!r} for --task {task}: {err}") from err
    if model.config.pad_token_id is None and pad_token_id is not None:
        # A decoder used as a classifier finds each row's last token through the pad id.
        model.config.pad_token_id = pad_token_id
    return model


def head_name(model: nn.Module, task: str) -> str | None:
    """Return the attribute name of a sequence classifier's head (``classifier`` or ``score``)."""
    if task != "seq-cls":
        return None
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise TrainingConfigError(
        f"This {type(model).__name__} has no classifier head named {' or '.join(HEAD_NAMES)}; "
        "lorakit cannot tell which module to train and save with the adapter."
    )


def make_lora_config(config: TrainConfig, target_modules: list[str], head: str | None, model_path: str) -> LoraConfig:
    """Build PEFT's ``LoraConfig`` for the new adapter; a classifier head is saved with it (``modules_to_save``)."""
    return LoraConfig(
        task_type=_TASK_TYPES[config.task or "causal-lm"],
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules,
        use_rslora=config.use_rslora,
        modules_to_save=[head] if head else None,
        base_model_name_or_path=model_path,
    )


class TrainableModel(Protocol):
    """The model the Trainer trains, and how to save and restore the new adapter."""

    model: nn.Module

    def save(self, folder: Path) -> None:
        """Write the new adapter as a PEFT folder into ``folder`` (created if needed)."""

    def load_weights(self, folder: Path) -> None:
        """Replace the new adapter's tensors with those saved in ``folder``."""


class PeftTrainable:
    """A new adapter made by PEFT's ``get_peft_model`` (changes ``base`` in place)."""

    def __init__(self, base: PreTrainedModel, lora_config: LoraConfig) -> None:
        self.model: PeftModel = get_peft_model(base, lora_config)
        _list_only_present_heads(self.model, base)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder))
        set_default_permissions(folder)  # safetensors writes its files readable by the owner only

    def load_weights(self, folder: Path) -> None:
        state = load_file(str(folder / SAFETENSORS_NAME))
        result = set_peft_model_state_dict(self.model, state)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise AdapterFormatError(
                f"Checkpoint {str(folder)!r} holds tensors this model does not have ({', '.join(unexpected[:5])}); "
                "resume with the settings the checkpoint was written with."
            )


def _list_only_present_heads(model: PeftModel, base: nn.Module) -> None:
    """Keep in each config's ``modules_to_save`` only the names of modules ``base`` has, once each.

    PEFT's ``SEQ_CLS`` task appends both ``classifier`` and ``score`` to the list, so a BERT
    adapter would be saved with ``["classifier", "classifier", "score"]``. PEFT appends them
    again when it loads the adapter, so the shorter list loads the same.
    """
    paths = [path for path, _ in base.named_modules()]

    def present(module_name: str) -> bool:
        return any(path == module_name or path.endswith("." + module_name) for path in paths)

    for config in model.peft_config.values():
        if getattr(config, "modules_to_save", None):
            config.modules_to_save = [name for name in dict.fromkeys(config.modules_to_save) if present(name)]


class StackTrainable:
    """A new adapter trained through lorakit's runtime on top of frozen adapters (changes ``base`` in place).

    Raises:
        TrainingConfigError: A stacked adapter carries its own copy of the classifier head.
    """

    def __init__(self, base: PreTrainedModel, lora_config: LoraConfig, name: str, stack: list[StackEntry]) -> None:
        from lorakit.runtime import MultiAdapterModel

        self.name = name
        self.runtime = MultiAdapterModel(base)
        if stack:
            self.runtime.load_adapters({entry.name: entry.path for entry in stack})
        _check_no_head_copies(self.runtime, stack, lora_config.modules_to_save or [])
        self.runtime.add_adapter(name, lora_config, trainable=True)
        weights = {entry.name: entry.weight for entry in stack}
        weights[name] = 1.0
        self.runtime.activate(weights)
        self.model = self.runtime.model
        logger.info(
            "Training %r on top of the frozen stack %s",
            name, " + ".join(f"{entry.weight:g} * {entry.name}" for entry in stack),
        )

    def save(self, folder: Path) -> None:
        # save_adapter writes a whole folder; write it beside ``folder`` and move the files in,
        # so that files already in ``folder`` (checkpoint state, metrics) stay.
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder))
        try:
            written = self.runtime.save_adapter(self.name, staging / "adapter")
            for path in written.iterdir():
                os.replace(path, folder / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load_weights(self, folder: Path) -> None:
        saved = read_adapter(folder, self.name)
        # export_adapter returns detached views of the runtime's parameters, so copying
        # into them updates the parameters in place and keeps the optimizer's references.
        current = self.runtime.export_adapter(self.name)
        with torch.no_grad():
            for path, module in current.modules.items():
                for target, source in zip(module.tensors(), saved.modules[path].tensors()):
                    target.copy_(source)
            for path, copy in current.module_copies.items():
                for parameter_name, target in copy.items():
                    target.copy_(saved.module_copies[path][parameter_name])
        reloaded = self.runtime.export_adapter(self.name)
        first = next(iter(reloaded.modules))
        if not torch.equal(reloaded.modules[first].lora_A, saved.modules[first].lora_A):
            raise RuntimeError(
                f"Restoring {str(folder)!r} did not update adapter {self.name!r}: the runtime's export_adapter "
                "no longer returns views of its parameters."
            )


def _check_no_head_copies(runtime: Any, stack: list[StackEntry], heads: list[str]) -> None:
    for entry in stack:
        copies = runtime.record(entry.name).copy_paths
        clash = [path for path in copies if path in heads]
        if clash:
            raise TrainingConfigError(
                f"Stacked adapter {entry.name!r} carries its own classifier head ({', '.join(clash)}). The new "
                "adapter trains its own head, and the runtime would mix the heads with the base model's randomly "
                "initialised one, so the result could not be reproduced. Stack adapters without a head."
            )


def build_trainable(
    base: PreTrainedModel, lora_config: LoraConfig, config: TrainConfig
) -> PeftTrainable | StackTrainable:
    """Make the trainable model: PEFT alone, or the runtime when ``config.stack`` is set."""
    stack = config.stack_entries()
    if stack:
        return StackTrainable(base, lora_config, config.resolved_adapter_name(), stack)
    return PeftTrainable(base, lora_config)


def add_label_names(folder: Path, label_names: list[str]) -> None:
    """Store the class names beside the adapter, in ``labels.json`` (see :func:`lorakit.adapters.io.write_labels`)."""
    write_labels(folder, {"id2label": {str(index): name for index, name in enumerate(label_names)}})


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
