"""Balanced Softmax (Ren et al. 2020): cross-entropy on z + log n_c, n_c the train count of class c, one stage;
plain logits at test time (BagofTricks-LT lib/loss/loss_impl/balanced_softmax_cross_entropy_loss.py:14-26,
weight_list = the class counts, without DRW)."""
import torch
from torch.nn import functional as F

from ltbench import Method, register_method


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float() + torch.log(counts.float()).to(logits.device), labels)


@register_method("balanced-softmax", summary="softmax with the log class counts added to the logits during "
                 "training (Ren et al. 2020)")
class BalancedSoftmax(Method):
    family = "logit adjustment"
    reference = "zhangyongshun/BagofTricks-LT lib/loss/loss_impl/balanced_softmax_cross_entropy_loss.py:14-26"

    def stages(self, recipe):
        return [recipe.representation(loss="balanced-softmax")]

    def loss(self, out, batch, state):
        return balanced_softmax_loss(out.logits, batch["y"], state.data.class_counts)
