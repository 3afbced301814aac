"""The combine methods by name; the command line builds its ``--method`` choices from here.

Each method lives in its own module with a ``METHOD`` constant, in the manner of
mergekit's ``merge_methods``.
"""

from __future__ import annotations

from lorakit.combine import dare_linear, dare_ties, linear, magnitude_prune, svd, ties
from lorakit.combine.types import CombineMethod
from lorakit.errors import CombineError

METHODS: dict[str, CombineMethod] = {
    module.METHOD.name: module.METHOD
    for module in (linear, svd, ties, dare_linear, dare_ties, magnitude_prune)
}


def method_names() -> list[str]:
    """Return the registered method names, in registration order."""
    return list(METHODS)


def get_method(name: str) -> CombineMethod:
    """Return the method called ``name``.

    Raises:
        CombineError: No method has that name; the message lists the ones that exist.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise CombineError(
            f"Unknown combine method {name!r}; choose one of: {', '.join(METHODS)}."
        ) from None
