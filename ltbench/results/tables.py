"""``ltbench table``: scan a results folder (runs.py), aggregate over seeds, lay out (layout.py), compare to
a reference method (compare.py) and render (render.py)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .cells import Cell, Difference, Table
from .compare import compare_runs, comparison_note
from .layout import BEST_EPOCH_NOTE, EXTRA_COLUMNS, long_table, paper_table
from .render import FORMATS, output_format, render, to_rich, write_table
from .runs import load_finished_runs, load_runs, summarize
from .significance import REPLICATES

LAYOUTS = ("paper", "long")
TABLE_METRICS = ("acc", "error")

__all__ = ["Cell", "Difference", "FORMATS", "LAYOUTS", "TABLE_METRICS", "Table", "build_table", "load_runs",
           "output_format", "render", "summarize", "to_rich", "write_table"]


def build_table(results: str | Path, layout: str = "paper", metric: str = "acc", filters: list[str] | None = None,
                with_reference: bool = False, warn: Callable[[str], None] = warnings.warn,
                extra: list[str] | None = None, compare_to: str | None = None,
                replicates: int = REPLICATES, best_epoch: bool = False) -> Table:
    """Scan, aggregate and lay out the runs of one results folder (with ``compare_to``: and the difference of
    each row to that method, with its interval; with ``best_epoch``: and the best epoch on test, labelled)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown table layout '{layout}' (choose {', '.join(LAYOUTS)})")
    if metric not in TABLE_METRICS:
        raise ConfigError(f"unknown table metric '{metric}' (choose {', '.join(TABLE_METRICS)})")
    unknown = [m for m in extra or () if m not in EXTRA_COLUMNS]
    if unknown:
        raise ConfigError(f"--extra {unknown[0]}: not a metric the table can add (choose {', '.join(EXTRA_COLUMNS)})")
    if extra and layout != "long":
        raise ConfigError("--extra adds columns to the long layout: add --layout long")
    if replicates < 100:
        raise ConfigError(f"--replicates {replicates}: too few for a 95 % interval's 2.5 and 97.5 percentiles; "
                          f"use 1000 or more (default {REPLICATES})")
    runs = load_finished_runs(results, filters, warn)
    summary = summarize(runs)
    differences = compare_runs(runs, compare_to, replicates) if compare_to else None
    if layout == "paper":
        table = paper_table(summary, metric, with_reference, differences, compare_to, best_epoch)
    else:
        table = long_table(summary, metric, with_reference, tuple(dict.fromkeys(extra or ())), differences, compare_to,
                           best_epoch)
    notes = [comparison_note(compare_to, replicates, metric == "error")] if compare_to else []
    table.note = " ".join(notes + ([BEST_EPOCH_NOTE] if best_epoch else []))
    return table
