"""ltbench: a benchmark harness for long-tailed image recognition.

The names that need torch (Method, LTModel, ...) are imported on first use (PEP 562), so commands that
never train -- `ltbench --help`, `table`, `plot`, `datasets` -- start without importing torch or timm.
"""
__version__ = "0.1.0"

from .config import Optim, Range, Recipe, RunConfig, Stage  # noqa: E402,F401
from .errors import LTBenchError  # noqa: E402,F401
from .registry import register_dataset, register_method  # noqa: E402,F401

_LAZY = {
    "DataInfo": "method", "Method": "method", "StageState": "method",
    "LogitScales": "models.heads", "LTModel": "models.heads", "Outputs": "models.heads",
    "tau_normalize": "models.heads",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ltbench' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
