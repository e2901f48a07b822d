"""The model the runner trains: a timm backbone plus method extras (LWS scales, auxiliary nets)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Outputs:
    """What a method's loss receives: logits, pooled features and, on request, stage feature maps."""

    logits: torch.Tensor
    features: torch.Tensor
    feature_maps: list = field(default_factory=list)


class LogitScales(nn.Module):
    """LWS (Kang et al. 2020): a learnable per-class scale on the frozen classifier's logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, logits):
        return logits * self.scales


class LTModel(nn.Module):
    """Backbone (timm contract) + ``extras`` (a ModuleDict of method modules, saved with the model).

    ``extras['logit_scales']`` (LWS) and ``extras['head']`` (NCM), when present, are part of inference;
    every other extra is training-only (DaSL's auxiliary network) and never touches the test logits.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleDict()
        self.num_stage_maps = len(getattr(backbone, "feature_info", []))

    @property
    def classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: ``extras['head']`` (e.g. NCM) replaces the classifier."""
        logits = self.extras["head"](features) if "head" in self.extras else self.classifier(features)
        if "logit_scales" in self.extras:
            logits = self.extras["logit_scales"](logits)
        return logits

    def encode(self, x: torch.Tensor, feature_maps: int | list | None = None):
        """Pooled features and, when ``feature_maps`` names stages (timm ``indices``), their maps."""
        maps = []
        if feature_maps is None:
            final = self.backbone.forward_features(x)
        else:
            final, maps = self.backbone.forward_intermediates(x, indices=feature_maps)
        return self.backbone.forward_head(final, pre_logits=True), maps

    def forward(self, x: torch.Tensor, feature_maps: int | list | None = None) -> Outputs:
        features, maps = self.encode(x, feature_maps)
        return Outputs(self.head(features), features, maps)


@torch.no_grad()
def tau_normalize(classifier: nn.Linear, tau: float, weight: torch.Tensor | None = None) -> None:
    """tau-norm (Kang et al. 2020): W_c <- W_c / ||W_c||^tau, bias dropped."""
    weight = classifier.weight.detach().clone() if weight is None else weight
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    classifier.weight.copy_(weight / norms.pow(tau))
    if classifier.bias is not None:
        classifier.bias.zero_()
