"""Evaluation metrics (docs/protocol.md): top-1, many/medium/few, ECE (15 bins), NLL, wrong-confidence,
per-class accuracy and feature compactness. Accuracies and ECE are in percent, as papers print them."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from .calibration import ECE_BINS, reliability_bins  # noqa: F401
from .data.longtail import GROUP_NAMES, shot_groups


def expected_calibration_error(confidences, correct, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017; MiSLAS uses 15): sum_b |B|/N |acc - conf|."""
    conf = torch.as_tensor(confidences, dtype=torch.float64)
    corr = torch.as_tensor(correct, dtype=torch.float64)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.double().mean() * (corr[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def feature_compactness(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean squared distance of a feature to its class mean / mean squared distance between class
    means (lower = more compact classes; DaSL's stage-1 claim)."""
    features = features.double()
    labels = labels.long()
    present = torch.bincount(labels, minlength=num_classes) > 0
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64).index_add_(0, labels, features)
    means = sums / torch.bincount(labels, minlength=num_classes).clamp_min(1).unsqueeze(1).double()
    intra = ((features - means[labels]) ** 2).sum(1).mean()
    m = means[present]
    if len(m) < 2:
        return float("nan")
    between = torch.cdist(m, m).pow(2)
    inter = between.sum() / (len(m) * (len(m) - 1))
    return float(intra / inter)


def _nan_to_none(value: float):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts,
                           features: torch.Tensor | None = None) -> tuple[dict, list[dict]]:
    """Summary metrics and per-class rows. Groups with no class give None (printed as '-')."""
    logits = logits.float()
    labels = labels.long()
    num_classes = logits.shape[1]
    probs = logits.softmax(1)
    confidence, predictions = probs.max(1)
    correct = predictions.eq(labels)
    per_class_total = torch.bincount(labels, minlength=num_classes)
    per_class_correct = torch.bincount(labels[correct], minlength=num_classes)
    per_class_acc = per_class_correct.double() / per_class_total.clamp_min(1).double()
    groups = shot_groups(class_counts)
    metrics = {
        "acc": 100.0 * float(correct.double().mean()),
        "ece": 100.0 * expected_calibration_error(confidence, correct),
        "nll": float(F.cross_entropy(logits, labels)),
        "wrong_confidence": float(confidence[~correct].mean()) if (~correct).any() else None,
        "mean_confidence": float(confidence.mean()),
        "balanced_acc": 100.0 * float(per_class_acc[per_class_total > 0].mean()),
        "group_sizes": {},
        "num_test": int(len(labels)),
    }
    for g, name in enumerate(GROUP_NAMES):
        members = torch.as_tensor(groups == g) & (per_class_total > 0)
        metrics["group_sizes"][name] = int((torch.as_tensor(groups) == g).sum())
        if members.any():  # sample-weighted over the group's test images (balanced test: = class mean)
            acc = per_class_correct[members].sum().double() / per_class_total[members].sum().double()
            metrics[f"{name}_acc"] = 100.0 * float(acc)
        else:
            metrics[f"{name}_acc"] = None
    if features is not None:
        metrics["feature_compactness"] = _nan_to_none(feature_compactness(features, labels, num_classes))
    rows = [
        {"class": c, "train_count": int(class_counts[c]), "test_count": int(per_class_total[c]),
         "correct": int(per_class_correct[c]), "acc": 100.0 * float(per_class_acc[c]),
         "group": GROUP_NAMES[groups[c]]}
        for c in range(num_classes)
    ]
    return metrics, rows
