"""NCM as Kang et al. 2020 (facebookresearch/classifier-balancing): features of the (un-augmented) train
set from the frozen CE backbone; ``cl2n`` subtracts their mean and L2-normalises (run_networks.py:631,
648-652); class centroids are the means of those features, not re-normalised (KNNClassifier.py:54-55 are
commented out); logits are minus the squared Euclidean distance (KNNClassifier.py:65-75, dist_type 'l2').
No temperature by default: a fitted one would make NCM's ECE incomparable with the other rows."""
import torch
from torch import nn
from torch.nn import functional as F

from ltbench import Method, Range, Stage, register_method


class NearestClassMean(nn.Module):
    """logits = scale * -||f(x) - c_k||^2, f = (x - mean) / ||x - mean|| (cl2n) or x / ||x|| (l2)."""

    role = "classifier"  # replaces the classifier at inference (``LTModel.head``)

    def __init__(self, centroids: torch.Tensor, feature_mean: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.register_buffer("centroids", centroids)
        self.register_buffer("feature_mean", feature_mean)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, features):
        normed = F.normalize(features.float() - self.feature_mean, dim=1)
        return -self.scale * torch.cdist(normed, self.centroids).pow(2)


@register_method("ncm", summary="nearest class mean: centred, L2-normalised CE features, squared Euclidean "
                 "distance to the class means (Kang et al. 2020)")
class NCM(Method):
    family = "decoupling"
    reference = "facebookresearch/classifier-balancing models/KNNClassifier.py"
    defaults = {"feature_norm": "cl2n", "scale": 1.0}
    choices = {"feature_norm": ("cl2n", "l2")}
    # logits are -scale * squared distances of unit vectors (in [0, 4]): the fitted scale's grid tops at 64, and
    # past 1000 (ldam-drw's bound on its s as well) softmax is one-hot for any distance gap above 0.05; 1e308
    # would overflow the logits to -inf
    ranges = {"scale": Range(0, 1000, bounds="(]", also=(-1,))}
    help = {"feature_norm": "cl2n: subtract the train-feature mean, then L2-normalise (the reference); l2: "
                            "L2-normalise only",
            "scale": "multiplies the logits (only confidence changes); 1: none, as the reference; -1: fit it "
                     "on validation NLL (a temperature, a deviation from the reference)"}

    def tunes_on_validation(self):
        return self.options["scale"] < 0

    def stages(self, recipe):
        return [recipe.representation(), Stage("ncm", trainable="none", post="ncm")]

    @torch.no_grad()
    def post_stage(self, state):
        features, labels = state.evaluate("train", features_only=True)
        features = features.float()
        mean = features.mean(0) if self.options["feature_norm"] == "cl2n" else torch.zeros_like(features[0])
        normed = F.normalize(features - mean, dim=1)
        sums = torch.zeros(state.data.num_classes, normed.shape[1], device=normed.device)
        sums.index_add_(0, labels, normed)
        counts = torch.bincount(labels, minlength=state.data.num_classes).clamp_min(1)
        head = NearestClassMean(sums / counts.unsqueeze(1).to(sums), mean).to(normed.device)
        state.model.extras["head"] = head
        scale = self.options["scale"]
        if scale < 0:  # a temperature fitted on validation NLL, never on the test set
            val_features, val_labels = state.evaluate("val", features_only=True)
            distances = head(val_features)
            grid = [0.5, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
            scale = min(grid, key=lambda s: F.cross_entropy(s * distances, val_labels).item())
        head.scale.fill_(scale)
        return {"scale": scale}
