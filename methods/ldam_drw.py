"""LDAM-DRW (Cao et al. 2019), as kaidic/LDAM-DRW: a cosine classifier (NormedLinear, models/resnet_cifar.py:
37-46: class vectors initialised uniform in [-1, 1] and renormed to length 1, logits = cos(feature, class));
the LDAM loss CE(s * (z - m_y at the label)) with margins m_c proportional to n_c^(-1/4), the largest 0.5, s 30
(losses.py:23-45; cifar_train.py:219-220); and DRW's deferred effective-number weights (beta 0.9999 from epoch
160 of 200, cifar_train.py:206-213; here a fraction of the stage). The classifier here returns s * cos: the
loss is the same, s * (cos - m_y) = s * cos - s * m_y, and the test logits are the ones softmax was trained on
(the reference's validate() scores cos, with the same argmax), so ECE is comparable with the other rows."""
import torch
from torch import nn
from torch.nn import functional as F

from ltbench import register_method
from ltbench.methods.drw import DeferredReweighting


class CosineClassifier(nn.Module):
    """scale * cos(x, w_c) (LDAM-DRW's NormedLinear, times the loss's scale s)."""

    def __init__(self, in_features: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x):
        return self.scale * F.normalize(x.float(), dim=1).mm(F.normalize(self.weight, dim=0))


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    """m_c = n_c^(-1/4), scaled so that the largest (the smallest class's) is ``max_margin``."""
    margins = 1.0 / counts.double().clamp_min(1) ** 0.25
    return margins * (max_margin / margins.max())


@register_method("ldam-drw", summary="label-distribution-aware margins on a cosine classifier, deferred "
                 "re-weighting (Cao et al. 2019)")
class LDAMDRW(DeferredReweighting):
    family = "margin"
    reference = "kaidic/LDAM-DRW losses.py:23-45, cifar_train.py:206-220"
    defaults = {"max_margin": 0.5, "scale": 30.0, "beta": 0.9999, "defer": 0.8}
    ranges = {"max_margin": (0, 10), "scale": (0, 1000, "(]"), "beta": (0, 1, "[)"), "defer": (0, 1, "[)")}
    help = {"max_margin": "margin of the smallest class (the others: n^-1/4 times it)",
            "scale": "s: logits are s * cosine", **DeferredReweighting.help,
            "beta": "effective-number beta of the deferred weights (0.9999 on every data set)"}

    @classmethod
    def dataset_defaults(cls, dataset, imbalance, options):
        # not drw's per-data-set beta: 0.9999 on CIFAR-10 and CIFAR-100 alike in LDAM-DRW (cifar_train.py:206-213)
        # and in BagofTricks-LT's LDAM (lib/loss/loss_impl/ldam_loss.py:34-36 at ce7859a; its configs set no beta)
        return {}

    def stages(self, recipe):
        o = self.options
        return [recipe.representation(loss="ldam-drw", max_margin=o["max_margin"], scale=o["scale"], beta=o["beta"],
                                      defer_epoch=round(o["defer"] * recipe.stage1.epochs))]

    def classifier(self, in_features, num_classes):
        return CosineClassifier(in_features, num_classes, self.options["scale"])

    def loss(self, out, batch, state):
        opts, y = state.stage.opts, batch["y"]
        margins = ldam_margins(state.data.class_counts, opts["max_margin"]).to(out.logits.device, torch.float32)
        logits = out.logits.float() - F.one_hot(y, out.logits.shape[1]) * (opts["scale"] * margins[y])[:, None]
        return F.cross_entropy(logits, y, weight=self.class_weights(state))
