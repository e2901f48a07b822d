"""mixup (Zhang et al. 2018) as MiSLAS' stage 1: each batch mixed with a permutation of itself,
x = lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha) (1 when alpha = 0), loss lam CE(z, y) + (1 - lam)
CE(z, y[perm]) (dvlab-research/MiSLAS: mixup_data / mixup_criterion imported at train_stage1.py:35 from its
methods.py, not in the index read for this change: written after the mixup_data copies that cite
facebookresearch/mixup-cifar10 train.py, lam = np.random.beta(alpha, alpha), one torch.randperm; alpha 1.0, config/cifar10/cifar10_imb001_stage1_mixup.yaml:45-46). One lam per batch from NumPy's generator and
the permutation from torch's CPU generator, as the reference: both are in ltbench's checkpoints, so a resumed
run mixes the same pairs."""
import numpy as np
import torch
from torch.nn import functional as F

from ltbench import Method, register_method


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float):
    """(mixed x, partner labels, lam); alpha = 0 returns x itself."""
    if alpha <= 0:
        return x, y, 1.0
    lam = float(np.random.beta(alpha, alpha))
    index = torch.randperm(x.shape[0]).to(x.device)
    return lam * x + (1 - lam) * x[index], y[index], lam


@register_method("mixup", summary="mixup training: convex combinations of image pairs and of their labels "
                 "(Zhang et al. 2018; MiSLAS stage 1)")
class Mixup(Method):
    family = "augmentation"
    reference = "dvlab-research/MiSLAS train_stage1.py, methods.py mixup_data"
    defaults = {"alpha": 1.0}
    ranges = {"alpha": (0, 100)}
    help = {"alpha": "Beta(alpha, alpha) of the mixing weight; 0: no mixing"}

    def stages(self, recipe):
        return [recipe.representation(loss="mixup", alpha=self.options["alpha"])]

    def transform_batch(self, batch, state):
        x, y_b, lam = mixup(batch["x"], batch["y"], state.stage.opts["alpha"])
        return {**batch, "x": x, "y_b": y_b, "lam": lam}

    def loss(self, out, batch, state):
        logits, lam = out.logits.float(), batch["lam"]
        return lam * F.cross_entropy(logits, batch["y"]) + (1 - lam) * F.cross_entropy(logits, batch["y_b"])
