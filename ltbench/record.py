"""The run-file format, defined once: what a run folder holds and how its config.json and metrics.json read.

``<results>/runs/<name>/`` holds config.json (the resolved config, written when the run starts: run key,
method options and the method's resolved ``method_defaults``, stage keys, data, versions), metrics.json
(written last: its presence marks a finished run), per_class.csv, epochs.jsonl, test_logits.npz,
model.pt and, for a subset, subset.npz. The engine writes both JSON files through :func:`config_json`
and :func:`metrics_json`; tables, plots, sweeps' skip logic and benchmarks/reproduce.py read them
through :func:`read` and :func:`run_key`. Torch-free, so readers never import the engine.

Both JSON files carry ``schema_version`` (SCHEMA_VERSION). Folders written before it existed have none and
read as version 0: the same fields, except that the oldest lack ``method_defaults`` (tables then take a
built-in method's declared defaults from ltbench.declarations, without importing it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .files import read_json

SCHEMA_VERSION = 1  # version 0: no schema_version written (folders from before this module)

# What ltbench computes for one configuration, versioned: bumped when a change moves the numbers that existing
# settings give, so tables never pool or compare runs across it (the recipe column names an older version).
# 1: up to commit 61f1414 (no "numerics" in config.json): the rate evaluated per step at the step's end, a short
#    last batch per epoch, mixup/MiSLAS on BagofTricks-LT's stage-1 schedule, cb/drw beta 0.9999 everywhere.
# 2: the references' per-epoch rate (last_epoch = e + 1) and whole batches only (#28 item 7), MiSLAS' own stage-1
#    schedule for mixup/mislas (#28 item 6), BagofTricks-LT's per-data-set cb/drw settings (#28 item 5).
NUMERICS_VERSION = 2

CONFIG_FILE = "config.json"  # written when the run starts
METRICS_FILE = "metrics.json"  # written last: a finished run
PER_CLASS_FILE = "per_class.csv"
TEST_LOGITS_FILE = "test_logits.npz"

GROUPS = ("many", "medium", "few")
# the scalar metrics of metrics.json (None where they are undefined, e.g. a shot group without classes)
METRICS = ("acc", "many_acc", "medium_acc", "few_acc", "balanced_acc", "ece", "nll", "wrong_confidence",
               "feature_compactness")
# what each metric can be: (low, high) bounds of a value a run writes (percentages, a confidence, >= 0)
METRIC_BOUNDS = {**{key: (0.0, 100.0) for key in ("acc", "many_acc", "medium_acc", "few_acc", "balanced_acc", "ece")},
                 "wrong_confidence": (0.0, 1.0), "nll": (0.0, math.inf), "feature_compactness": (0.0, math.inf)}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
              int: "a number", float: "a number"}


class RecordError(ValueError):
    """A run file that is JSON but not what a run writes (hand-edited or foreign): the message says what."""


def config_json(config: dict) -> dict:
    """config.json's content: the resolved config, stamped with the schema version."""
    return {"schema_version": SCHEMA_VERSION, **{k: v for k, v in config.items() if k != "schema_version"}}


def metrics_json(metrics: dict) -> dict:
    """metrics.json's content: the run's metrics, stamped with the schema version."""
    return {"schema_version": SCHEMA_VERSION, **{k: v for k, v in metrics.items() if k != "schema_version"}}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _object(path: Path, content) -> dict:
    if not isinstance(content, dict):
        raise RecordError(f"{path} holds {JSON_TYPES.get(type(content), 'something else')}, not a JSON object")
    return content


@dataclass
class RunRecord:
    """One run folder's config.json and (once finished) metrics.json, as written by the engine."""

    folder: Path
    config: dict
    metrics: dict | None = None  # None: unfinished

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def schema_version(self) -> int:
        version = self.config.get("schema_version", 0)
        return version if isinstance(version, int) else 0

    @property
    def run_key(self) -> str | None:
        return (self.metrics if self.metrics is not None else self.config).get("run_key")

    @property
    def numerics(self) -> int:
        """NUMERICS_VERSION of the code that made the run (1 for runs that do not record it)."""
        version = self.config.get("numerics", 1)
        return version if isinstance(version, int) and not isinstance(version, bool) else 1

    @property
    def method_options(self) -> dict:
        return self.config.get("method_options") or {}

    @property
    def method_defaults(self) -> dict | None:
        """The method's resolved default options when the run was written; None for runs older than that
        record (the caller then asks the method itself)."""
        defaults = self.config.get("method_defaults")
        return defaults if isinstance(defaults, dict) else None

    def to_config_json(self) -> dict:
        return config_json(self.config)

    def to_metrics_json(self) -> dict:
        return metrics_json(self.metrics or {})

    def problem(self) -> str | None:
        """Why a finished run's files cannot make a table row (a hand-edited or foreign file), or None."""
        config, metrics = self.config, self.metrics or {}
        expected = {**{key: (str, "a string") for key in ("method", "dataset", "backbone", "recipe")},
                    "seed": (int, "an integer")}
        config_file, metrics_file = self.folder / CONFIG_FILE, self.folder / METRICS_FILE
        for key, (kind, what) in expected.items():
            value = config.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"{config_file} has '{key}' = {value!r} ({what} expected)"
        if config.get("imbalance") is not None and not _number(config["imbalance"]):
            return f"{config_file} has 'imbalance' = {config['imbalance']!r} (a number or null expected)"
        if not isinstance(config.get("method_options") or {}, dict):
            return f"{config_file} has 'method_options' = {config['method_options']!r} (an object expected)"
        if metrics.get("acc") is None:
            return f"{metrics_file} has no 'acc' (top-1 accuracy, the number every table shows)"
        for key in METRICS:
            value = metrics.get(key)
            if value is not None and not _number(value):
                return f"{metrics_file} has '{key}' = {value!r} (a number expected)"
            low, high = METRIC_BOUNDS[key]
            if value is not None and not (math.isfinite(value) and low <= value <= high):  # NaN, inf, 250, -1e308
                allowed = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"finite and >= {low:g}"
                return f"{metrics_file} has '{key}' = {value!r} (a value {allowed} expected)"
        sizes = metrics.get("group_sizes")
        if not (isinstance(sizes, dict) and all(isinstance(sizes.get(g), int) and not isinstance(sizes[g], bool)
                                                and sizes[g] >= 0 for g in GROUPS)):
            return f"{metrics_file} has 'group_sizes' = {sizes!r} (many/medium/few class counts expected)"
        return None


def is_finished(folder: str | Path) -> bool:
    """metrics.json is written last: a folder without it is a run in progress, stopped or killed."""
    return (Path(folder) / METRICS_FILE).is_file()


def read(folder: str | Path) -> RunRecord:
    """The record of a run folder (metrics None when unfinished). Raises OSError or ValueError for a file
    that cannot be read as JSON, RecordError (a ValueError) for JSON that is not an object."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE)
    metrics = read_json(folder / METRICS_FILE) if is_finished(folder) else None
    _object(folder / CONFIG_FILE, config)
    if metrics is not None:
        _object(folder / METRICS_FILE, metrics)
    return RunRecord(folder, config, metrics)


def run_key(folder: str | Path) -> tuple[str | None, bool]:
    """(run key, finished) of a run folder: from metrics.json when it is there, else from config.json (a run
    stopped or killed). Only that one file is read; OSError or ValueError when it cannot be."""
    folder = Path(folder)
    finished = (folder / METRICS_FILE).exists()
    content = read_json(folder / (METRICS_FILE if finished else CONFIG_FILE))
    return (content.get("run_key") if isinstance(content, dict) else None), finished


def run_folders(results: str | Path) -> list[Path]:
    """The run folders under ``<results>/runs/``, by name."""
    return sorted(p for p in (Path(results) / "runs").glob("*") if p.is_dir())
