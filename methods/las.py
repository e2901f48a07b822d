"""Label-aware smoothing, MiSLAS' stage 2 (Zhong et al., CVPR 2021; dvlab-research/MiSLAS train_stage2.py),
on the shared CE stage 1. MiSLAS' own stage 1 adds mixup (alpha 1); that is not part of this method.

What follows the reference (train_stage2.py at bb5ba7e; config/cifar10/cifar10_imb001_stage2_mislas.yaml:39-46):
- the stage-1 classifier is fine-tuned, not re-initialised (:200-201), under class-balanced sampling (:230);
- a learnable per-class weight scaling on the logits, initialised at 1 (:131; methods.LearnableWeightScaling),
  trained at the full lr while the classifier gets lr_factor * lr (:241-244, :456-462);
- label-aware smoothing epsilon_k from the class count n_k, concave by default (methods.LabelAwareSmoothing):
  concave eps_tail + (eps_head - eps_tail) sin((n_k - n_min) pi / (2 (n_max - n_min))), linear, convex;
- shift_bn: the frozen backbone's BN statistics re-estimated on the balanced batches (:310-314);
- 10 epochs, cosine learning rate (:456), weight decay 2e-4, plain SGD (momentum 0.9).
Defaults are CIFAR-10-LT IF100's (head 0.3, tail 0.0, shift_bn off, lr_factor 0.5). MiSLAS' other configs:
CIFAR-10 IF50 0.2/0.0 (lr_factor 0.2), IF10 0.1/0.0; CIFAR-100 IF100 0.4/0.1 with shift_bn on; ImageNet-LT
0.3/0.0 with shift_bn on (lr_factor 0.05) -- pass them with -o.
"""
import math
from dataclasses import replace

import torch
from torch.nn import functional as F

from ltbench import LogitScales, Method, register_method

SCALES = "logit_scales"


def label_aware_epsilon(counts: torch.Tensor, head: float, tail: float, shape: str = "concave") -> torch.Tensor:
    """Per-class smoothing from the class counts: ``head`` at the largest class, ``tail`` at the smallest."""
    counts = counts.double()
    span = (counts.max() - counts.min()).clamp_min(1)
    position = (counts - counts.min()) / span  # 0 at the tail, 1 at the head
    if shape == "concave":
        return tail + (head - tail) * torch.sin(position * math.pi / 2)
    if shape == "linear":
        return tail + (head - tail) * position
    return head + (head - tail) * torch.sin(1.5 * math.pi + position * math.pi / 2)  # convex


@register_method("las", summary="label-aware smoothing stage 2 of MiSLAS (Zhong et al. 2021): the CE classifier "
                 "fine-tuned with count-dependent smoothing and learnable weight scaling (no mixup stage 1)")
class LabelAwareSmoothing(Method):
    family = "decoupling"
    reference = "dvlab-research/MiSLAS train_stage2.py"
    defaults = {"smooth_head": 0.3, "smooth_tail": 0.0, "shape": "concave", "shift_bn": False, "lr_factor": 0.5,
                "epochs": 10}
    choices = {"shape": ("concave", "linear", "convex")}
    # lr_factor: a fraction of the stage's rate (default 0.5); 10 times the stage's rate is already past what
    # any recipe trains a classifier at. epochs: the recipe's stage 2 (30 epochs at most) caps it anyway
    ranges = {"smooth_head": (0, 1, "[)"), "smooth_tail": (0, 1, "[)"), "lr_factor": (0, 10, "(]"),
              "epochs": (1, 1000)}
    help = {"smooth_head": "epsilon of the largest class", "smooth_tail": "epsilon of the smallest class",
            "shape": "how epsilon falls from head to tail with the class count",
            "shift_bn": "re-estimate the frozen backbone's BN statistics on the balanced batches",
            "lr_factor": "the classifier's learning rate as a fraction of the stage's (weight scales: the full lr)",
            "epochs": "stage-2 epochs (the recipe's stage-2 length when that is shorter)"}

    def stages(self, recipe):
        o = self.options
        optim = replace(recipe.stage2, schedule="cosine", warmup_epochs=0, milestones=(), weight_decay=2e-4,
                        nesterov=False)
        optim = optim.with_epochs(min(o["epochs"], recipe.stage2.epochs))
        return [recipe.representation(),
                recipe.classifier("las", reinit=False, loss="las", bn="train" if o["shift_bn"] else "frozen",
                                  optim=optim, smooth_head=o["smooth_head"], smooth_tail=o["smooth_tail"],
                                  shape=o["shape"], lr_factor=o["lr_factor"])]

    # the hooks below run on stage 2 only: the shared stage 1 is trained by the core's hooks
    def on_stage_start(self, state):
        if SCALES not in state.model.extras:
            state.model.extras[SCALES] = LogitScales(state.data.num_classes).to(state.data.device)

    def trainable_parameters(self, model, stage):
        return [{"params": list(model.classifier.parameters()), "lr_scale": stage.opts["lr_factor"]},
                {"params": list(model.extras[SCALES].parameters()), "lr_scale": 1.0}]

    def loss(self, out, batch, state):
        opts = state.stage.opts
        epsilon = label_aware_epsilon(state.data.class_counts, opts["smooth_head"], opts["smooth_tail"],
                                      opts["shape"]).to(out.logits.device, torch.float32)[batch["y"]]
        log_probs = F.log_softmax(out.logits.float(), dim=1)
        nll = -log_probs.gather(1, batch["y"][:, None]).squeeze(1)
        return ((1 - epsilon) * nll - epsilon * log_probs.mean(1)).mean()
