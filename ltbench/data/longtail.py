"""Long-tailed subsets (the LDAM-DRW rule), validation splits and shot groups (docs/protocol.md)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

MANY_SHOT = 100  # many: > 100 train images
FEW_SHOT = 20  # few: < 20; medium: 20..100 inclusive


def lt_counts(img_max: int, num_classes: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Per-class train counts; class 0 is the head.

    exp:  n_i = int(img_max * (1/IF) ** (i / (C - 1)))   (LDAM-DRW, Cao et al. 2019)
    step: the first half of the classes keep img_max, the rest int(img_max / IF)
    """
    if not (imbalance >= 1 and math.isfinite(imbalance)):  # NaN fails every comparison: say it the same way
        raise ConfigError(f"imbalance factor must be >= 1 (max count / min count) and finite, got {imbalance:g}")
    if profile not in ("exp", "step"):
        raise ConfigError(f"unknown long-tail profile '{profile}' (choose exp or step)")
    counts = _counts(img_max, num_classes, imbalance, profile)
    if min(counts) < 1:  # a class without a training image: every number of the run would be meaningless
        largest = next(f for f in range(min(int(imbalance), img_max), 0, -1)
                       if min(_counts(img_max, num_classes, f, profile)) >= 1)
        raise ConfigError(f"imbalance factor {imbalance:g} leaves class {counts.index(0)} of {num_classes} without a "
                          f"training image ({img_max} images in the largest class): the imbalance factor can be at most {largest} "
                          f"here")
    return counts


def _counts(img_max: int, num_classes: int, imbalance: float, profile: str) -> list[int]:
    if profile == "exp":
        if num_classes == 1:
            return [img_max]
        return [int(img_max * (1.0 / imbalance) ** (i / (num_classes - 1))) for i in range(num_classes)]
    head = num_classes // 2
    return [img_max] * head + [int(img_max / imbalance)] * (num_classes - head)


def lt_subset(labels: np.ndarray, num_classes: int, imbalance: float, profile: str = "exp",
              seed: int = 0, img_max: int | None = None, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the long-tailed train subset: a seeded random choice of n_i images per class.

    ``img_max`` defaults to the smallest class count of ``labels``, so unequal balanced sets (MNIST) work
    too. ``exclude`` (the validation split, reserved first) is never chosen; a class with fewer images left
    than n_i keeps all it has left (under the LDAM rule: the head class, short by its validation images).
    """
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if img_max is None:
        img_max = min(len(p) for p in per_class)
    counts = lt_counts(img_max, num_classes, imbalance, profile)
    if exclude is not None and len(exclude):
        per_class = [np.setdiff1d(p, exclude, assume_unique=True) for p in per_class]
    rng = np.random.RandomState(seed)
    kept = []
    for c, idx in enumerate(per_class):
        kept.append(rng.choice(idx, counts[c], replace=False) if counts[c] < len(idx) else idx)
    return np.sort(np.concatenate(kept)).astype(np.int64)


def balanced_val_split(labels: np.ndarray, num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """A class-balanced validation split, drawn from the balanced pool BEFORE the long-tailed subset is
    taken (``lt_subset(..., exclude=val)``), so no validation image is ever a training image."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed + 1)
    val = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(val)).astype(np.int64)


def shot_groups(class_counts) -> np.ndarray:
    """0 = many (> 100), 1 = medium (20..100), 2 = few (< 20), from TRAIN counts."""
    counts = np.asarray(class_counts)
    return np.where(counts > MANY_SHOT, 0, np.where(counts >= FEW_SHOT, 1, 2))


GROUP_NAMES = ("many", "medium", "few")


def group_sizes(class_counts) -> dict[str, int]:
    groups = shot_groups(class_counts)
    return {name: int((groups == g).sum()) for g, name in enumerate(GROUP_NAMES)}
