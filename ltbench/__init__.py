"""ltbench: a benchmark harness for long-tailed image recognition."""
__version__ = "0.1.0"

from .config import Optim, Range, Recipe, RunConfig, Stage  # noqa: E402,F401
from .errors import LTBenchError  # noqa: E402,F401
from .method import DataInfo, Method, StageState  # noqa: E402,F401
from .models.heads import LogitScales, LTModel, Outputs, tau_normalize  # noqa: E402,F401
from .registry import register_dataset, register_method  # noqa: E402,F401
