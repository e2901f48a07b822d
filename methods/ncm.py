import torch
from torch import nn
from torch.nn import functional as F

from ltbench import Method, Stage, register_method


class CosineToMeans(nn.Module):
    """Logits = scale * cos(feature, class mean)."""

    def __init__(self, means: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("means", F.normalize(means, dim=1))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, features):
        return self.scale * F.normalize(features, dim=1) @ self.means.t()


@register_method("ncm", summary="nearest class mean on normalised stage-1 features (Kang et al. 2020)")
class NearestClassMean(Method):
    defaults = {"scale": -1.0}
    help = {"scale": "logit scale of the cosine scores (only calibration depends on it); -1 picks it by "
                     "validation NLL"}

    def stages(self, recipe):
        return [recipe.representation(), Stage("ncm", trainable="none", post="ncm")]

    @torch.no_grad()
    def post_stage(self, state):
        features, labels = state.evaluate("train", features_only=True)
        features = F.normalize(features.float(), dim=1)
        sums = torch.zeros(state.data.num_classes, features.shape[1], device=features.device)
        sums.index_add_(0, labels, features)
        head = CosineToMeans(sums / state.data.class_counts.clamp_min(1).unsqueeze(1).to(sums), 1.0)
        state.model.extras["head"] = head.to(features.device)
        scale = self.options["scale"]
        if scale < 0:  # the scale only changes confidence; fit it on validation NLL
            val_features, val_labels = state.evaluate("val", features_only=True)
            cosines = head(val_features.float())
            grid = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
            scale = min(grid, key=lambda s: F.cross_entropy(s * cosines, val_labels).item())
        head.scale.fill_(scale)
        return {"scale": scale}
