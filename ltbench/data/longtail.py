"""Long-tailed subsets (the LDAM-DRW rule), validation splits and shot groups (PROTOCOL.md)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

MANY_SHOT = 100  # many: > 100 train images
FEW_SHOT = 20  # few: < 20; medium: 20..100 inclusive


def lt_counts(img_max: int, num_classes: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Per-class train counts; class 0 is the head.

    exp:  n_i = int(img_max * (1/IF) ** (i / (C - 1)))   (LDAM-DRW, Cao et al. 2019)
    step: the first half of the classes keep img_max, the rest int(img_max / IF)
    """
    if imbalance < 1:
        raise ConfigError(f"imbalance factor must be >= 1 (max count / min count), got {imbalance:g}")
    if profile == "exp":
        if num_classes == 1:
            return [img_max]
        return [int(img_max * (1.0 / imbalance) ** (i / (num_classes - 1))) for i in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [img_max] * head + [int(img_max / imbalance)] * (num_classes - head)
    raise ConfigError(f"unknown long-tail profile '{profile}' (choose exp or step)")


def lt_subset(labels: np.ndarray, num_classes: int, imbalance: float, profile: str = "exp",
              seed: int = 0, img_max: int | None = None) -> np.ndarray:
    """Indices of the long-tailed train subset: a seeded random choice of n_i images per class.

    ``img_max`` defaults to the smallest class count, so unequal balanced sets (MNIST) work too.
    """
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if img_max is None:
        img_max = min(len(p) for p in per_class)
    counts = lt_counts(img_max, num_classes, imbalance, profile)
    rng = np.random.RandomState(seed)
    kept = []
    for c, idx in enumerate(per_class):
        kept.append(rng.choice(idx, counts[c], replace=False) if counts[c] < len(idx) else idx)
    return np.sort(np.concatenate(kept)).astype(np.int64)


def balanced_val_split(labels: np.ndarray, kept: np.ndarray, num_classes: int, per_class: int,
                       seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A class-balanced validation split from the train images the LT subset did NOT keep.

    Under the LDAM rule the head class keeps every image, so nothing is left for it; such classes
    take their validation images from their kept ones, and are returned so that the run records them.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed + 1)
    unkept = np.ones(len(labels), dtype=bool)
    unkept[kept] = False
    val, overlap = [], []
    for c in range(num_classes):
        pool = np.flatnonzero(unkept & (labels == c))
        if len(pool) < per_class:
            overlap.append(c)
            pool = np.flatnonzero(labels == c)
        val.append(rng.choice(pool, min(per_class, len(pool)), replace=False))
    return np.sort(np.concatenate(val)).astype(np.int64), overlap


def shot_groups(class_counts) -> np.ndarray:
    """0 = many (> 100), 1 = medium (20..100), 2 = few (< 20), from TRAIN counts."""
    counts = np.asarray(class_counts)
    return np.where(counts > MANY_SHOT, 0, np.where(counts >= FEW_SHOT, 1, 2))


GROUP_NAMES = ("many", "medium", "few")


def group_sizes(class_counts) -> dict[str, int]:
    groups = shot_groups(class_counts)
    return {name: int((groups == g).sum()) for g, name in enumerate(GROUP_NAMES)}
