"""Reliability bins in numpy, apart from metrics.py (torch) so that `ltbench plot reliability` starts
without importing torch."""
from __future__ import annotations

import numpy as np

ECE_BINS = 15


def reliability_bins(confidences, correct, bins: int = ECE_BINS) -> dict:
    """Per-bin accuracy, confidence and count (for reliability diagrams)."""
    conf = np.asarray(confidences, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    acc = np.bincount(which, weights=corr, minlength=bins) / np.maximum(count, 1)
    mean_conf = np.bincount(which, weights=conf, minlength=bins) / np.maximum(count, 1)
    return {"edges": edges, "accuracy": acc, "confidence": mean_conf, "count": count}
