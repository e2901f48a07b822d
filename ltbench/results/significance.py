"""Is a difference between two methods real? A paired bootstrap over test images, seeds combined.

`ltbench table --compare-to METHOD` pairs each row's runs with METHOD's runs of the same dataset × IF,
backbone, recipe and seed, on the same test images (their labels must be identical). Within a seed, one
bootstrap replicate draws test images with replacement and takes the top-1 difference on them: the same
images for both methods (paired), so what both get right or both get wrong cancels and only the images
they disagree on move the difference. A replicate draws every seed's resample and averages the per-seed
differences, the way the table averages seeds. The interval is the 2.5 and 97.5 percentiles of the
replicates; the generator is seeded, so a table prints the same interval every time.

What the interval covers: which test images happen to be in the test set, for the trained models at hand.
It does not cover training noise beyond the seeds present (another seed trains another model); with few
seeds, read it next to the per-seed spread that the table's ± gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..record import TEST_LOGITS_FILE

REPLICATES = 2000
BOOTSTRAP_SEED = 0
_CHUNK_DRAWS = 4_000_000  # image indices drawn at once (32 MB of int64): memory stays flat on big test sets


@dataclass(frozen=True)
class Interval:
    """A difference in percentage points with its 95 % interval, over ``seeds`` paired seeds."""

    difference: float
    low: float
    high: float
    seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def read_test_logits(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``test_logits.npz`` of a run: (N x classes logits, N labels), or DataError naming the file."""
    path = Path(folder) / TEST_LOGITS_FILE
    try:
        with np.load(path, allow_pickle=False) as saved:
            logits, labels = saved["logits"].astype(np.float64), saved["labels"]
    except Exception as exc:  # noqa: BLE001  truncated zip (BadZipFile), EOF, missing key, bad dtype, ...
        raise DataError(f"{path}: cannot read test logits ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                        f"the run folder is damaged: leave it out with --filter, or run it again") from None
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels) or not logits.shape[1]:
        raise DataError(f"{path}: logits {logits.shape} and labels {labels.shape} do not match (N x classes and N "
                        f"expected); leave the run out with --filter, or run it again")
    return logits, labels


def paired_bootstrap(differences: list[np.ndarray], replicates: int = REPLICATES,
                     seed: int = BOOTSTRAP_SEED) -> Interval:
    """``differences``: per seed, one value per test image (1 = only A right, -1 = only B right, 0 = same).

    Returns the mean over seeds of the observed top-1 difference and the percentile interval of the
    replicates, in percentage points.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    for per_image in differences:
        per_image = np.asarray(per_image, dtype=np.float64)
        n = len(per_image)
        rows = max(1, _CHUNK_DRAWS // n)
        for start in range(0, replicates, rows):
            count = min(rows, replicates - start)
            total[start:start + count] += per_image[rng.integers(0, n, size=(count, n))].mean(axis=1)
    replicate_means = 100.0 * total / len(differences)
    observed = 100.0 * float(np.mean([np.mean(d) for d in differences]))
    low, high = np.percentile(replicate_means, [2.5, 97.5])
    return Interval(observed, float(low), float(high), len(differences))


@lru_cache(maxsize=256)
def _correct(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(right or not per test image, labels) of a run; kept, so a reference run is read once per table."""
    logits, labels = read_test_logits(folder)
    return logits.argmax(1) == labels, labels


def paired_differences(run: str | Path, reference: str | Path) -> np.ndarray:
    """Per test image: (run right) - (reference right). Refuses runs whose test labels differ."""
    correct, labels = _correct(str(run))
    ref_correct, ref_labels = _correct(str(reference))
    if labels.shape != ref_labels.shape or not np.array_equal(labels, ref_labels):
        what = f"{len(labels)} and {len(ref_labels)} images" if labels.shape != ref_labels.shape else \
            f"at {int((labels != ref_labels).sum())} of {len(labels)} images"
        raise DataError(f"cannot pair {run} with {reference}: their test labels differ ({what}), so they were not "
                        f"tested on the same images; leave one out with --filter")
    return correct.astype(np.float64) - ref_correct
