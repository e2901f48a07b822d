"""Samplers are index streams: one epoch of train indices, generated in one shot on the device."""
from __future__ import annotations

import torch

from ..errors import ConfigError


def class_weights(kind: str, class_counts: torch.Tensor, progress: float = 0.0) -> torch.Tensor | None:
    """Probability of drawing each class, or None for plain instance sampling."""
    counts = class_counts.double()
    if kind == "instance":
        return None
    if kind == "class-balanced":
        weights = (counts > 0).double()
    elif kind == "sqrt":
        weights = counts.sqrt()
    elif kind == "progressive":  # Kang et al.: instance -> class-balanced over the stage
        weights = (1 - progress) * counts / counts.sum() + progress * (counts > 0).double() / (counts > 0).sum()
    else:
        raise ConfigError(f"unknown sampler '{kind}' (choose instance, class-balanced, sqrt or progressive)")
    return weights / weights.sum()


class IndexStream:
    """Epoch index streams for one label vector: instance (a permutation) or class-weighted draws
    (class first, then a uniform member of it), ``len(labels)`` indices per epoch either way."""

    def __init__(self, labels: torch.Tensor, num_classes: int):
        self.labels = labels
        self.num_classes = num_classes
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        self.by_class = torch.argsort(labels, stable=True)  # indices grouped by class
        self.offsets = torch.cumsum(self.class_counts, 0) - self.class_counts

    def epoch(self, kind: str, generator: torch.Generator, progress: float = 0.0) -> torch.Tensor:
        n = len(self.labels)
        weights = class_weights(kind, self.class_counts, progress)
        device = self.labels.device
        if weights is None:
            return torch.randperm(n, generator=generator, device=generator.device).to(device)
        classes = torch.multinomial(weights.float().to(generator.device), n, replacement=True, generator=generator)
        uniform = torch.rand(n, generator=generator, device=generator.device)
        classes = classes.to(device)
        within = (uniform.to(device) * self.class_counts[classes]).long()
        return self.by_class[self.offsets[classes] + within]
