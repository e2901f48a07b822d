"""Class-balanced loss (Cui et al. 2019): every image weighted by w_y = (1 - beta) / (1 - beta^n_y), normalised to
sum to the number of classes, from the first epoch (BagofTricks-LT lib/loss/loss_impl/class_balanced_loss.py:
26-28). ``loss=softmax``: weighted CE, the weighted mean of F.cross_entropy (ClassBalanceCE, loss_base.py:25);
``loss=focal``: sigmoid focal loss, sum over classes of BCE * (1 - p_t)^gamma times w_y, summed and divided by
the batch size (ClassBalanceFocal, class_balanced_loss.py:67-79), as richardaecn/class-balanced-loss.

beta and gamma per data set, as the BagofTricks-LT configs behind its ClassBalanceCE and ClassBalanceFocal rows
(configs/cao_cifar/re_weighting/{cbce,cbfocal}/<dataset>_im<IF>.yaml at commit ce7859a): softmax beta 0.9 on
CIFAR-100-LT and 0.9999 on CIFAR-10-LT (``CBCE_BETA``, as drw); focal (beta, gamma) by data set and imbalance
factor (``CBFOCAL``): CIFAR-10-LT IF 100 (0.9999, 1.0), IF 50 (0.9999, 2.0); CIFAR-100-LT IF 100 (0.9, 1.0), IF 50
(0.99, 1.0); another imbalance factor takes the nearest configured one (log scale). Other data sets: the class
defaults, CIFAR-10-LT IF 100's (beta 0.9999, LDAM-DRW's "Reweight" rule too, cifar_train.py:199-205; gamma 1.0).
BagofTricks-LT's lib/config/default.py values (beta 0.999, gamma 0.5) are in none of its configs' results."""
import torch
from torch.nn import functional as F

from ltbench import register_method
from ltbench.methods.drw import CBCE_BETA, DeferredReweighting, reference_config

# LOSS.ClassBalanceFocal BETA and GAMMA, re_weighting/cbfocal/<dataset>_im<IF>.yaml lines 29-30 (27-28 in
# cifar10_im50.yaml), BagofTricks-LT commit ce7859a: (ltbench data set, imbalance factor) -> (beta, gamma)
CBFOCAL = {("cifar10-lt", 100): (0.9999, 1.0), ("cifar10-lt", 50): (0.9999, 2.0),
           ("cifar100-lt", 100): (0.9, 1.0), ("cifar100-lt", 50): (0.99, 1.0)}


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
    defaults = {"beta": 0.9999, "loss": "softmax", "gamma": 1.0}
    choices = {"loss": ("softmax", "focal")}
    ranges = {"beta": (0, 1, "[)"), "gamma": (0, 10)}
    help = {"beta": "effective-number beta (0: no re-weighting; -> 1: inverse class frequency); default per data "
                    "set as BagofTricks-LT's configs: softmax 0.9 on cifar100-lt, 0.9999 on cifar10-lt; focal "
                    "cifar100-lt 0.9 (IF 100) / 0.99 (IF 50), cifar10-lt 0.9999; other data sets 0.9999; the run "
                    "records the value used",
            "loss": "softmax: weighted cross-entropy; focal: weighted sigmoid focal loss",
            "gamma": "focal loss's focusing parameter (loss=focal only); default per data set as BagofTricks-LT's "
                     "cbfocal configs: 1.0, but 2.0 on cifar10-lt IF 50"}

    @classmethod
    def dataset_defaults(cls, dataset, imbalance, options):
        if str(options.get("loss", cls.defaults["loss"])) == "focal":
            config = reference_config(CBFOCAL, dataset, imbalance)
            return {} if config is None else dict(zip(("beta", "gamma"), config))
        beta = reference_config(CBCE_BETA, dataset, imbalance)
        return {} if beta is None else {"beta": beta}

    def stages(self, recipe):
        o = self.options
        focal = {"gamma": o["gamma"]} if o["loss"] == "focal" else {}
        return [recipe.representation(loss=f"cb-{o['loss']}", beta=o["beta"], defer_epoch=0, **focal)]

    def loss(self, out, batch, state):
        if "gamma" not in state.stage.opts:
            return super().loss(out, batch, state)
        return sigmoid_focal(out.logits, batch["y"], self.class_weights(state), state.stage.opts["gamma"])
