"""The measurements of a demo run, in the shape that ``metrics.json`` stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorakit.demo.data import LABELS
from lorakit.demo.settings import DemoSettings
from lorakit.demo.training import TrainedAdapter


@dataclass
class ConfigurationResult:
    """One model configuration's accuracy on each test set.

    Attributes:
        name: Short name (``base``, ``movies``, ``stack``, ...).
        description: What the model applies, for the report.
        accuracy: Domain -> accuracy on that domain's test rows.
        seconds: Time to score every test set.
        rows: Test rows scored.
    """

    name: str
    description: str
    accuracy: dict[str, float]
    seconds: float
    rows: int


@dataclass
class DemoResult:
    """Everything a demo run produced and measured.

    Attributes:
        settings: The run's settings.
        output: The output folder.
        model_path: The base model's folder.
        data: Domain -> row counts and source.
        adapters: Domain -> the trained (or reused) adapter.
        configurations: Results in the order they were scored.
        combined: Combine method -> ``{"path", "weights", "seconds", "max_relative_error", ...}``.
        checks: Named numbers that show the runtime's exactness (largest logit differences).
        seconds: Wall time of the whole run.
    """

    settings: DemoSettings
    output: Path
    model_path: str
    data: dict[str, dict[str, Any]]
    adapters: dict[str, TrainedAdapter]
    configurations: list[ConfigurationResult] = field(default_factory=list)
    combined: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def domains(self) -> list[str]:
        return list(self.data)

    def configuration(self, name: str) -> ConfigurationResult:
        """Return the result of configuration ``name``.

        Raises:
            KeyError: No configuration has that name. The message lists the names.
        """
        for result in self.configurations:
            if result.name == name:
                return result
        raise KeyError(
            f"Configuration {name!r} not found; configurations: {', '.join(r.name for r in self.configurations)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the contents of ``metrics.json``."""
        return {
            "settings": asdict(self.settings),
            "model_path": self.model_path,
            "labels": list(LABELS),
            "data": self.data,
            "adapters": {
                name: {**asdict(adapter), "path": str(adapter.path)} for name, adapter in self.adapters.items()
            },
            "configurations": [asdict(result) for result in self.configurations],
            "combined": self.combined,
            "checks": self.checks,
            "seconds": self.seconds,
        }
