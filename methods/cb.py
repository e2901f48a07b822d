"""Class-balanced loss (Cui et al. 2019): every image weighted by w_y = (1 - beta) / (1 - beta^n_y), normalised to
sum to the number of classes, from the first epoch (BagofTricks-LT lib/loss/loss_impl/class_balanced_loss.py:
26-28). ``loss=softmax``: weighted CE, the weighted mean of F.cross_entropy (ClassBalanceCE, loss_base.py:25);
``loss=focal``: sigmoid focal loss, sum over classes of BCE * (1 - p_t)^gamma times w_y, summed and divided by
the batch size (ClassBalanceFocal, class_balanced_loss.py:67-79), as richardaecn/class-balanced-loss.
beta 0.9999 (LDAM-DRW's "Reweight" rule, cifar_train.py:199-205; BagofTricks-LT's default is 0.999), gamma 0.5
(BagofTricks-LT lib/config/default.py, LOSS.ClassBalanceFocal.GAMMA)."""
import torch
from torch.nn import functional as F

from ltbench import register_method
from ltbench.methods.drw import DeferredReweighting


def sigmoid_focal(logits, labels, weights, gamma):
    """sum_i w_{y_i} sum_c BCE(z_ic, t_ic) (1 - p_t)^gamma / batch, t one-hot, p = sigmoid(z)."""
    target = F.one_hot(labels, logits.shape[1]).float()
    p = torch.sigmoid(logits.float())
    focal = torch.pow((1 - p) * target + p * (1 - target), gamma)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * focal
    return (loss * weights[labels].view(-1, 1)).sum() / logits.shape[0]


@register_method("cb", summary="class-balanced loss: effective-number class weights on softmax CE or sigmoid "
                 "focal loss (Cui et al. 2019)")
class ClassBalanced(DeferredReweighting):
    reference = "zhangyongshun/BagofTricks-LT lib/loss/loss_impl/class_balanced_loss.py"
    defaults = {"beta": 0.9999, "loss": "softmax", "gamma": 0.5}
    choices = {"loss": ("softmax", "focal")}
    ranges = {"beta": (0, 1, "[)"), "gamma": (0, 10)}
    help = {"beta": "effective-number beta (0: no re-weighting; -> 1: inverse class frequency)",
            "loss": "softmax: weighted cross-entropy; focal: weighted sigmoid focal loss",
            "gamma": "focal loss's focusing parameter (loss=focal only)"}

    def stages(self, recipe):
        o = self.options
        focal = {"gamma": o["gamma"]} if o["loss"] == "focal" else {}
        return [recipe.representation(loss=f"cb-{o['loss']}", beta=o["beta"], defer_epoch=0, **focal)]

    def loss(self, out, batch, state):
        if "gamma" not in state.stage.opts:
            return super().loss(out, batch, state)
        return sigmoid_focal(out.logits, batch["y"], self.class_weights(state), state.stage.opts["gamma"])
