"""Focal loss (Lin et al. 2017) in its softmax form, as LDAM-DRW's CIFAR baseline: FL = (1 - p_y)^gamma CE, with
p_y = exp(-CE), averaged over the batch (kaidic/LDAM-DRW losses.py:7-21; gamma 1 for its "Focal" row,
cifar_train.py:221-222). gamma = 0 is cross-entropy. BagofTricks-LT's FocalLoss (lib/loss/loss_impl/
focal_loss.py:26-40) is the sigmoid form; ``cb -o loss=focal`` is that one, with class-balanced weights."""
import torch
from torch.nn import functional as F

from ltbench import Method, register_method


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean over the batch of (1 - p_y)^gamma * -log p_y (softmax)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return ((1 - torch.exp(-ce)) ** gamma * ce).mean()


@register_method("focal", summary="softmax focal loss, one stage, instance-balanced sampling (Lin et al. 2017)")
class Focal(Method):
    family = "re-weighting"
    reference = "kaidic/LDAM-DRW losses.py:7-21"
    defaults = {"gamma": 1.0}
    ranges = {"gamma": (0, 10)}
    help = {"gamma": "focusing parameter: (1 - p_y)^gamma down-weights well-classified images; 0 is CE"}

    def stages(self, recipe):
        return [recipe.representation(loss="focal", gamma=self.options["gamma"])]

    def loss(self, out, batch, state):
        return focal_loss(out.logits, batch["y"], state.stage.opts["gamma"])
