"""Backbones come from ``timm.create_model`` (ours are registered with timm), wrapped with extras."""
from __future__ import annotations

import timm
from torch import nn

from ..errors import NotFoundError, did_you_mean
from . import resnet_cifar  # noqa: F401  (registers resnet20/32/56 with timm)
from .heads import LTModel, LogitScales, Outputs, tau_normalize  # noqa: F401


def create_backbone(name: str, num_classes: int, in_chans: int, pretrained: bool = False) -> nn.Module:
    """Any timm model (ours included), with ``num_classes`` and ``in_chans`` set from the data."""
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models())
        raise NotFoundError(f"unknown backbone '{name}'{hint} (any name from timm.list_models() works, "
                            f"plus CIFAR resnet20/resnet32/resnet56)")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # pretrained download without internet, bad combination, ...
        raise NotFoundError(f"could not create backbone '{name}': {type(exc).__name__}: {exc}") from None


def build_model(name: str, num_classes: int, in_chans: int, pretrained: bool = False) -> LTModel:
    return LTModel(create_backbone(name, num_classes, in_chans, pretrained))
