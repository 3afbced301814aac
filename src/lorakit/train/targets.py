"""Choosing and checking the modules a new adapter targets.

PEFT matches a ``target_modules`` entry against a module path when the path equals
the entry or ends with ``"." + entry``. The default is every linear layer that sits
directly inside an attention block (a module whose class name contains
``Attention``): ``q_proj, k_proj, v_proj, o_proj`` in LLaMA, ``query, key, value`` in
BERT, ``c_attn`` and ``attn.c_proj`` in GPT-2.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from torch import nn
from transformers.pytorch_utils import Conv1D

from lorakit.errors import TrainingConfigError
from lorakit.train.config import ALL_LINEAR

logger = logging.getLogger(__name__)

# The layer types PEFT's LoRA can wrap.
ADAPTABLE_TYPES = (nn.Linear, Conv1D, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR_TYPES = (nn.Linear, Conv1D)


def _adaptable_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """Yield ``(path, module, parent)`` for every module LoRA can wrap, in model order."""
    for path, module in model.named_modules():
        if path and isinstance(module, ADAPTABLE_TYPES):
            parent_path = path.rpartition(".")[0]
            yield path, module, model.get_submodule(parent_path) if parent_path else model


def module_names(model: nn.Module) -> list[str]:
    """Return the distinct last path components of the modules LoRA can wrap, in model order."""
    return list(dict.fromkeys(path.rsplit(".", 1)[-1] for path, _, _ in _adaptable_modules(model)))


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return "Attention" in name or "Attn" in name


def default_target_modules(model: nn.Module) -> list[str]:
    """Return the attention projections of ``model`` as PEFT ``target_modules`` entries.

    A projection name that also occurs outside attention (GPT-2's ``c_proj``) is
    qualified with its parent's name (``attn.c_proj``) so the MLP is not matched.

    Raises:
        TrainingConfigError: The model has no linear layer inside an attention module.
    """
    in_attention: dict[str, set[str]] = {}
    elsewhere: set[str] = set()
    for path, module, parent in _adaptable_modules(model):
        if not isinstance(module, _LINEAR_TYPES):
            continue
        parts = path.split(".")
        if _is_attention(parent):
            parent_name = parts[-2] if len(parts) > 1 else ""
            in_attention.setdefault(parts[-1], set()).add(parent_name)
        else:
            elsewhere.add(parts[-1])
    targets: list[str] = []
    for leaf, parents in in_attention.items():
        if leaf in elsewhere:
            targets.extend(f"{parent}.{leaf}" for parent in sorted(parents))
        else:
            targets.append(leaf)
    if not targets:
        raise TrainingConfigError(
            f"Found no linear layer inside an attention module of this {type(model).__name__}; "
            f"pass --target-modules with some of: {', '.join(module_names(model))}."
        )
    logger.info("Target modules (attention projections): %s", ", ".join(targets))
    return targets


def check_target_modules(model: nn.Module, target_modules: list[str]) -> None:
    """Check that every entry of ``target_modules`` matches a module LoRA can wrap.

    Args:
        model: The base model.
        target_modules: Names or name suffixes.

    Raises:
        TrainingConfigError: Some entries match nothing, or only modules LoRA cannot wrap;
            the message lists them together with the module names that exist.
    """
    adaptable = [path for path, _, _ in _adaptable_modules(model)]
    all_paths = [path for path, _ in model.named_modules() if path]
    problems = []
    for target in target_modules:
        if any(_matches(path, target) for path in adaptable):
            continue
        others = [path for path in all_paths if _matches(path, target)]
        if others:
            kinds = sorted({type(model.get_submodule(path)).__name__ for path in others})
            problems.append(f"{target!r} matches only {', '.join(kinds)} modules, which LoRA cannot wrap")
        else:
            problems.append(f"{target!r} matches no module")
    if problems:
        raise TrainingConfigError(
            f"Invalid --target-modules for this {type(model).__name__}: {'; '.join(problems)}. "
            f"Module names that can be targeted: {', '.join(module_names(model))} (or {ALL_LINEAR})."
        )


def _matches(path: str, target: str) -> bool:
    return path == target or path.endswith("." + target)


def all_linear_targets(model: nn.Module, head_name: str | None = None) -> list[str]:
    """Return entries that match every linear layer except the output layer and the classifier head.

    This is PEFT's ``all-linear``, spelled out so that PEFT and the lorakit runtime
    adapt the same layers. Last path components are used where they are unambiguous;
    a name that also occurs in an excluded layer (RoBERTa's ``classifier.dense`` beside
    ``output.dense``) is replaced by the full paths of the included layers.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    included, excluded = [], []
    for path, module, _ in _adaptable_modules(model):
        if not isinstance(module, _LINEAR_TYPES):
            continue
        in_head = head_name is not None and (path == head_name or path.startswith(head_name + "."))
        (excluded if in_head or module is output else included).append(path)
    excluded_leaves = {path.rsplit(".", 1)[-1] for path in excluded}
    targets: list[str] = []
    for path in included:
        leaf = path.rsplit(".", 1)[-1]
        entry = path if leaf in excluded_leaves else leaf
        if entry not in targets:
            targets.append(entry)
    if not targets:
        raise TrainingConfigError(
            f"--target-modules {ALL_LINEAR}: this {type(model).__name__} has no linear layer besides its output "
            f"layer; name modules instead, from: {', '.join(module_names(model))}."
        )
    return targets


def resolve_target_modules(
    model: nn.Module, target_modules: list[str] | None, head_name: str | None = None
) -> list[str]:
    """Return the checked ``target_modules`` entries for ``LoraConfig``.

    Args:
        model: The base model.
        target_modules: Names, ``["all-linear"]``, or ``None`` for the attention projections.
        head_name: The classifier head of a sequence classifier, which ``all-linear`` leaves out.

    Raises:
        TrainingConfigError: See :func:`default_target_modules` and :func:`check_target_modules`.
    """
    if target_modules is None:
        return default_target_modules(model)
    if target_modules == [ALL_LINEAR]:
        return all_linear_targets(model, head_name)
    check_target_modules(model, target_modules)
    return list(target_modules)
