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

    role = "logits"  # part of inference: transforms the logits (see ``LTModel.head``)

    def __init__(self, num_classes: int):
        super().__init__()
        self.scales = nn.Parameter(torch.ones(num_classes))

    def forward(self, logits):
        return logits * self.scales


class LTModel(nn.Module):
    """Backbone (timm contract) + ``extras`` (a ModuleDict of method modules, saved with the model).

    An extra is part of inference when its class says so with ``role``: "classifier" replaces the classifier
    on the pooled features (NCM's class means), "logits" transforms the logits (LWS' scales); every other
    extra is training-only (DaSL's auxiliary network) and never touches the test logits. The model knows no
    method: the roles are the methods' own declarations.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleDict()
        self.register_module("replaced_classifier", None)  # a method's head choice (``Method.classifier``)
        self.num_stage_maps = len(getattr(backbone, "feature_info", []))

    @property
    def classifier(self) -> nn.Module:
        return self.replaced_classifier if self.replaced_classifier is not None else self.backbone.get_classifier()

    def replace_classifier(self, module: nn.Module) -> None:
        """Use ``module`` on the pooled features instead of the backbone's linear layer, which is removed
        (timm ``reset_classifier(0)``), so no parameter goes without a gradient."""
        self.backbone.reset_classifier(0)
        self.replaced_classifier = module

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier (cRT's re-initialisation): the backbone's, or the replacement's parameters."""
        if self.replaced_classifier is None:
            self.backbone.reset_classifier(num_classes)
            return
        for module in self.replaced_classifier.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: the classifier, or the last extra whose ``role`` is "classifier",
        then every extra whose ``role`` is "logits", in the order they were added."""
        roles = [(getattr(m, "role", None), m) for m in self.extras.values()]
        replacing = [m for role, m in roles if role == "classifier"]
        logits = replacing[-1](features) if replacing else self.classifier(features)
        for role, module in roles:
            if role == "logits":
                logits = module(logits)
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
