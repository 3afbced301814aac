"""Loading the base model that adapters were trained on, in the class their task needs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import transformers
from transformers import AutoConfig, PreTrainedModel

from lorakit.adapters.heads import new_head_report_quiet
from lorakit.adapters.model import Adapter
from lorakit.assets import resolve_model
from lorakit.errors import ModelLoadError

logger = logging.getLogger(__name__)

# PEFT's task_type -> the transformers auto class whose module paths the adapter uses.
AUTO_CLASS_BY_TASK = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoModel",
}
# Module copies whose first weight dimension is the number of labels.
_HEAD_NAMES = ("classifier", "score")


def split_gguf(location: str) -> tuple[str, str | None]:
    """Return ``(folder, file name)`` for a path to a ``.gguf`` file, else ``(location, None)``."""
    path = Path(location).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return location, None


def load_base_model(name_or_path: str, adapters: Sequence[Adapter], *, dtype: str = "auto") -> PreTrainedModel:
    """Load the base model in the class that the adapters' ``task_type`` implies, in eval mode.

    Args:
        name_or_path: A folder, a ``.gguf`` file, a hub name, or a packaged model
            name (``minilm``, ``smollm2``).
        adapters: The adapters to apply; a classifier head copy sets ``num_labels``.
        dtype: The dtype to load in; ``"auto"`` keeps the checkpoint's.

    Raises:
        ModelLoadError: The adapters disagree on the task, or transformers cannot load the model.
    """
    location, gguf_file = split_gguf(resolve_model(name_or_path))
    model_class = _model_class(_task_type(adapters), location, gguf_file)
    kwargs: dict = {"dtype": dtype}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    num_labels = _num_labels(adapters)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        with new_head_report_quiet(adapters if num_labels is not None else []):
            model = model_class.from_pretrained(location, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"Could not load the base model {name_or_path!r} as {model_class.__name__}: {err}. "
            "Pass a local transformers folder, a .gguf file, or a hub name reachable from here."
        ) from err
    logger.debug("Loaded %s from %s in %s", type(model).__name__, location, model.dtype)
    return model.eval()


def _task_type(adapters: Sequence[Adapter]) -> str | None:
    tasks = {a.name: str(a.task_type).upper() for a in adapters if a.task_type}
    if len(set(tasks.values())) > 1:
        listed = ", ".join(f"{name!r}: {task}" for name, task in tasks.items())
        raise ModelLoadError(
            f"The adapters were trained for different tasks ({listed}); they need different model classes "
            "and cannot be applied to one model."
        )
    return next(iter(tasks.values()), None)


def _model_class(task_type: str | None, location: str, gguf_file: str | None) -> type:
    if task_type is not None:
        if task_type not in AUTO_CLASS_BY_TASK:
            raise ModelLoadError(
                f"Unsupported task_type {task_type!r}; lorakit loads models for: {', '.join(AUTO_CLASS_BY_TASK)}."
            )
        return getattr(transformers, AUTO_CLASS_BY_TASK[task_type])
    # Without a task type, the class the checkpoint was saved from has the adapter's module paths.
    try:
        config = AutoConfig.from_pretrained(location, gguf_file=gguf_file) if gguf_file else AutoConfig.from_pretrained(location)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"Could not read the configuration of base model {location!r}: {err}.") from err
    architectures = getattr(config, "architectures", None) or []
    if architectures and hasattr(transformers, architectures[0]):
        return getattr(transformers, architectures[0])
    return transformers.AutoModelForCausalLM if gguf_file else transformers.AutoModel


def _num_labels(adapters: Sequence[Adapter]) -> int | None:
    for adapter in adapters:
        for path, copy in adapter.module_copies.items():
            if path.rsplit(".", 1)[-1] not in _HEAD_NAMES:
                continue
            weight = copy.get("weight", copy.get("out_proj.weight"))
            if weight is not None and weight.ndim == 2:
                return int(weight.shape[0])
    return None


_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


def load_tokenizer(name_or_path: str):
    """Return the model's tokenizer, or ``None`` (logged) when it has none that loads."""
    from transformers import AutoTokenizer

    location, gguf_file = split_gguf(resolve_model(name_or_path))
    folder = Path(location)
    if gguf_file is None and folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        logger.info("No tokenizer copied: %s has no tokenizer files.", location)
        return None
    try:
        if gguf_file is not None:
            return AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("No tokenizer copied: none could be loaded from %s (%s).", name_or_path, err)
        return None
