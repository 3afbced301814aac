"""``lorakit demo``: two sentiment adapters trained on the packaged data, then loaded, stacked, combined and routed.

:func:`run_demo` is the Python form of the command.
"""

from lorakit.demo.results import ConfigurationResult, DemoResult
from lorakit.demo.run import run_demo
from lorakit.demo.settings import MODELS, SIZE_NAMES, DemoSettings

__all__ = ["MODELS", "SIZE_NAMES", "ConfigurationResult", "DemoResult", "DemoSettings", "run_demo"]
