"""Checks of a combine request and of its adapters, all problems reported together."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import torch
from torch import nn

from lorakit.adapters.model import Adapter, is_embedding_base_copy
from lorakit.combine.sparsify import MAJORITY_SIGN_METHODS
from lorakit.combine.types import CombineMethod, CombineOptions
from lorakit.errors import CombineError

_OPTION_HELP = {
    "rank": "rank (--rank), the rank to truncate to",
    "density": "density (--density), the fraction of delta entries to keep, in (0, 1]",
    "seed": "seed (--seed), the seed of DARE's random pruning",
    "majority_sign": "majority_sign (--majority-sign), TIES' sign election: total or frequency",
}


def check_request(
    method: CombineMethod,
    adapters: Sequence[Adapter],
    weights: Sequence[float],
    *,
    rank: int | None,
    density: float | None,
    seed: int | None,
    majority_sign: str | None,
) -> CombineOptions:
    """Check the weights and options against the method, and return the resolved options.

    A method that takes a seed and got none gets a random one, which the report records.

    Raises:
        CombineError: Every problem found, one per line.
    """
    problems = _weight_problems(adapters, weights)
    option_values = {"rank": rank, "density": density, "seed": seed, "majority_sign": majority_sign}
    for option, value in option_values.items():
        if value is not None and option not in method.options:
            users = sorted(m for m in _methods_using(option))
            problems.append(
                f"{_OPTION_HELP[option].split(',')[0]} does not apply to method {method.name!r}; "
                f"it is used by: {', '.join(users)}."
            )
    for option in sorted(method.required):
        if option_values[option] is None:
            problems.append(f"Method {method.name!r} needs {_OPTION_HELP[option]}.")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        problems.append(f"rank={rank!r} is invalid; expected a positive integer.")
    if density is not None and not (0.0 < density <= 1.0):
        problems.append(f"density={density!r} is invalid; expected a fraction in (0, 1].")
    if majority_sign is not None and majority_sign not in MAJORITY_SIGN_METHODS:
        problems.append(
            f"majority_sign={majority_sign!r} is invalid; expected one of: {', '.join(MAJORITY_SIGN_METHODS)}."
        )
    raise_problems(problems)
    if "seed" in method.options and seed is None:
        seed = secrets.randbelow(2**31)
    if "majority_sign" in method.options and majority_sign is None:
        majority_sign = "total"
    return CombineOptions(rank=rank, density=density, seed=seed, majority_sign=majority_sign or "total")


def _methods_using(option: str) -> list[str]:
    from lorakit.combine.registry import METHODS

    return [name for name, method in METHODS.items() if option in method.options]


def _weight_problems(adapters: Sequence[Adapter], weights: Sequence[float]) -> list[str]:
    if not adapters:
        return ["No adapters given; pass at least one adapter."]
    if len(weights) != len(adapters):
        return [
            f"Got {len(weights)} weights for {len(adapters)} adapters "
            f"({', '.join(a.name for a in adapters)}); pass one weight per adapter, in the same order."
        ]
    problems = [
        f"Weight {w!r} of adapter {a.name!r} is not a finite number."
        for a, w in zip(adapters, weights)
        if not isinstance(w, (int, float)) or not math.isfinite(w)
    ]
    if not problems and all(w == 0 for w in weights):
        problems.append("Every weight is 0, so the result would be empty; give at least one adapter a non-zero weight.")
    return problems


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`CombineError` listing ``problems``, if there are any."""
    if len(problems) == 1:
        raise CombineError(problems[0])
    if problems:
        raise CombineError("The adapters cannot be combined:\n- " + "\n- ".join(problems))


def check_adapters(
    adapters: Sequence[Adapter],
    rank: int | None,
    *,
    base_model: nn.Module | None,
    allow_different_bases: bool,
) -> None:
    """Check that the adapters fit one base model, hold finite values and allow ``rank``.

    Raises:
        CombineError: Different base models, shapes, kinds or layouts for one module,
            non-finite values, or a rank larger than a module allows.
        AdapterMismatchError: ``base_model`` is given and an adapter does not fit it.
    """
    problems = [] if allow_different_bases else _base_name_problems(adapters)
    problems += module_problems(adapters, rank)
    problems += finiteness_problems(adapters)
    raise_problems(problems)
    if base_model is not None:
        from lorakit.adapters.validate import validate_adapter

        for adapter in adapters:
            validate_adapter(adapter, base_model)


def _base_name_problems(adapters: Sequence[Adapter]) -> list[str]:
    names = {a.name: a.base_model_name_or_path for a in adapters if a.base_model_name_or_path}
    if len(set(names.values())) <= 1:
        return []
    listed = ", ".join(f"{name!r} on {base!r}" for name, base in names.items())
    return [
        f"The adapters were trained on different base models ({listed}). If these name the same model "
        "(one saved at two places, say), pass allow_different_bases=True (--allow-different-bases)."
    ]


def module_problems(adapters: Sequence[Adapter], rank: int | None) -> list[str]:
    problems = []
    first_seen: dict[str, tuple[str, tuple]] = {}
    for adapter in adapters:
        for path, module in adapter.modules.items():
            layout = (module.kind, module.in_features, module.out_features, module.fan_in_fan_out)
            if path not in first_seen:
                first_seen[path] = (adapter.name, layout)
                if rank is not None and rank > min(module.in_features, module.out_features):
                    problems.append(
                        f"rank={rank} is larger than module {path!r} allows: its delta is "
                        f"{module.out_features} x {module.in_features}, so its rank is at most "
                        f"{min(module.in_features, module.out_features)}. Choose a smaller rank."
                    )
            elif first_seen[path][1] != layout:
                other, other_layout = first_seen[path]
                problems.append(
                    f"Module {path!r} is {_describe_layout(layout)} in {adapter.name!r} but "
                    f"{_describe_layout(other_layout)} in {other!r}; were they trained on the same base model?"
                )
    return problems


def _describe_layout(layout: tuple) -> str:
    kind, in_features, out_features, fan_in_fan_out = layout
    transposed = ", fan_in_fan_out" if fan_in_fan_out else ""
    return f"a {kind} module with {in_features} inputs and {out_features} outputs{transposed}"


def finiteness_problems(adapters: Sequence[Adapter]) -> list[str]:
    problems = []
    for adapter in adapters:
        for path, module in adapter.modules.items():
            names = ("lora_A", "lora_B", "lora_bias")
            bad = [n for n, t in zip(names, (module.lora_A, module.lora_B, module.lora_bias)) if _non_finite(t)]
            if bad:
                problems.append(f"Adapter {adapter.name!r}, module {path!r}: {', '.join(bad)} hold NaN or infinity.")
        for path, copy in adapter.module_copies.items():
            bad = [name for name, tensor in copy.items() if _non_finite(tensor)]
            if bad and not is_embedding_base_copy(path):
                problems.append(
                    f"Adapter {adapter.name!r}, module copy {path!r}: {', '.join(bad)} hold NaN or infinity."
                )
    return problems


def _non_finite(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
