"""mixup (Zhang et al. 2018) as MiSLAS' stage 1: each batch mixed with a permutation of itself,
x = lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha) (1 when alpha = 0), loss lam CE(z, y) + (1 - lam)
CE(z, y[perm]) (dvlab-research/MiSLAS methods.py:8-28 at commit 0fc381e, mixup_data / mixup_criterion, used at
train_stage1.py:310-320: lam = np.random.beta(alpha, alpha), one torch.randperm; alpha 1.0,
config/cifar10/cifar10_imb001_stage1_mixup.yaml:45-46). One lam per batch from NumPy's generator and
the permutation from torch's CPU generator, as the reference: both are in ltbench's checkpoints, so a resumed
run mixes the same pairs.

Schedule: MiSLAS' own stage 1, not BagofTricks-LT's (``mislas_schedule``). MiSLAS trains it with plain SGD
(train_stage1.py:227-231 at commit 0fc381e: no nesterov) and sets one rate per epoch at the epoch's start
(adjust_learning_rate(optimizer, epoch, config) at :237, epoch from 0) by :433-451: epoch + 1 <= 5 runs at
lr * (epoch + 1) / 5, then lr, x0.1 once epoch + 1 > 160 and x0.01 once epoch + 1 > 180; lr 0.1, batch 128,
weight decay 2e-4, momentum 0.9, 200 epochs (config/cifar10/cifar10_imb001_stage1_mixup.yaml:39-44, the same in
the cifar100 configs). That is the paper recipe's stage 1 (BagofTricks-LT's, same lr, batch, weight decay,
epochs and milestone epochs) with three changes: no Nesterov, the warm-up rising from 0 (``warmup_from=0``,
lr * (e + 1) / 5 for the epoch of index e: 0.2, 0.4, 0.6, 0.8, 1.0 of lr; BagofTricks-LT's from 1/3), and x0.1
at each milestone from the epoch AFTER it (MiSLAS' ``epoch > 160``: its 161st epoch is the first decayed, so
ltbench's milestone, "the m-th epoch is the first decayed", is 161) instead of x0.01 from the 160th. The cpu and
tiny recipes (and --epochs) keep their own stage-1 length, warm-up length and milestone epochs (cpu: 2 warm-up
epochs, decays after 24 and 28 of 30) in MiSLAS' shape. On the cosine recipes (imagenet, inat, places) the
recipe's stage 1 is kept: MiSLAS' ImageNet-LT stage 1 is another configuration altogether (180 epochs, lr 0.1,
batch 256, cosine from epoch index 0, alpha 0.2; config/imagenet/imagenet_resnet50_stage1_mixup.yaml:39-46)."""
from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from ltbench import Method, Optim, register_method


def mislas_schedule(optim: Optim) -> Optim:
    """MiSLAS' stage-1 schedule in the shape of a step recipe's stage 1 (see the module docstring): plain SGD,
    warm-up from 0, x0.1 from the epoch after each milestone. Cosine and constant schedules are returned as
    they are."""
    if optim.schedule != "step":
        return optim
    return replace(optim, nesterov=False, warmup_from=0.0, gamma=0.1,
                   milestones=tuple(m + 1 for m in optim.milestones))


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
        stage = recipe.representation(loss="mixup", alpha=self.options["alpha"])
        return [replace(stage, optim=mislas_schedule(stage.optim))]

    def transform_batch(self, batch, state):
        x, y_b, lam = mixup(batch["x"], batch["y"], state.stage.opts["alpha"])
        return {**batch, "x": x, "y_b": y_b, "lam": lam}

    def loss(self, out, batch, state):
        logits, lam = out.logits.float(), batch["lam"]
        return lam * F.cross_entropy(logits, batch["y"]) + (1 - lam) * F.cross_entropy(logits, batch["y_b"])
