"""Batched augmentation for small images, on the training device (no per-image Python)."""
from __future__ import annotations

import torch

from .base import Augment


def random_crop_flip(images: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding + random horizontal flip of a uint8 batch [B, C, H, W].

    The same as torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip() per image, done
    as one gather over the batch: offsets and flips come from ``generator`` (seeded per run).
    """
    batch, channels, height, width = images.shape
    device = images.device
    gen_device = generator.device
    if augment.pad:
        pad = augment.pad
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=gen_device).to(device)
        dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=gen_device).to(device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # B,1,H,1
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # B,1,1,W
        images = padded[torch.arange(batch, device=device)[:, None, None, None],
                        torch.arange(channels, device=device)[None, :, None, None], rows, cols]
    if augment.flip:
        flip = torch.rand(batch, generator=generator, device=gen_device).to(device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float, (x / 255 - mean) / std, channels_last (faster convolutions)."""
    x = images.float().div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)
