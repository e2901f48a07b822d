"""Differences to a reference method (``--compare-to``): per row and setting, paired over seeds and test
images with a bootstrap interval (significance.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..record import TEST_LOGITS_FILE
from .cells import Difference
from .significance import REPLICATES, paired_bootstrap, paired_differences

COMPARED = ["setting", "backbone", "recipe"]  # with the seed and the test images: what pairs two runs


def _by_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with test logits, indexed by seed (load_runs keeps one run per seed: the newest)."""
    return runs[[(Path(p) / TEST_LOGITS_FILE).is_file() for p in runs["path"]]].set_index("seed")


def compare_runs(df: pd.DataFrame, reference: str, replicates: int = REPLICATES) -> dict[tuple[str, str], Difference]:
    """Per (label, setting): top-1 of the row minus ``reference``'s (a method label: ``crt``, ``dasl[beta=0.3]``)
    in the same setting, backbone and recipe, over the seeds both have (ltbench.results.significance)."""
    if reference not in set(df["base"]):
        raise ConfigError(f"--compare-to {reference}: no such method among the runs shown (they are "
                          f"{', '.join(dict.fromkeys(df['base']))}); name one, with its options if any")
    differences = {}
    for (label, *setting), runs in df.groupby(["label", *COMPARED], sort=False):
        key = (label, setting[0])
        if runs["base"].iloc[0] == reference:
            differences[key] = Difference(None, why="reference")
            continue
        same_setting = (df[COMPARED] == pd.Series(setting, index=COMPARED)).all(axis=1)
        ref_runs = df[same_setting & (df["base"] == reference)]
        if ref_runs.empty:
            differences[key] = Difference(None, why=f"- (no {reference} run here)")
            continue
        mine, theirs = _by_seed(runs), _by_seed(ref_runs)
        seeds = sorted(set(mine.index) & set(theirs.index))
        if not seeds:
            why = "no test logits" if mine.empty else f"no test logits of {reference}" if theirs.empty else \
                f"no seed in common with {reference}"
            differences[key] = Difference(None, why=f"- ({why})")
            continue
        interval = paired_bootstrap([paired_differences(mine.loc[s, "path"], theirs.loc[s, "path"]) for s in seeds],
                                    replicates)
        row_seeds = runs["seed"].nunique()
        differences[key] = Difference(interval.difference, seeds=len(seeds), low=interval.low, high=interval.high,
                                      of_seeds=row_seeds if len(seeds) < row_seeds else None)
    return differences


def comparison_note(reference: str, replicates: int, error: bool) -> str:
    what = "error" if error else "accuracy"
    return (f"Δ vs {reference}: top-1 {what} of the row minus {reference}'s (points), mean over the seeds both ran, "
            f"with a 95 % paired bootstrap interval over test images ({replicates} replicates, seeds combined; "
            f"test-set noise for these trained models, not training noise); * where it excludes 0.")
