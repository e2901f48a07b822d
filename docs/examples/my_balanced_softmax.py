"""Balanced Softmax (Ren et al., NeurIPS 2020) as an ltbench plugin: one file, no core edit.

Use it with `ltbench run --method my-balanced-softmax --plugins docs/examples` (or copy this file into a
folder listed in $LTBENCH_PLUGINS).
"""
import torch
from torch.nn import functional as F

from ltbench import Method, register_method


@register_method("my-balanced-softmax", summary="softmax with the train class prior added to the logits "
                 "during training (Ren et al. 2020)")
class BalancedSoftmax(Method):
    defaults = {"prior_power": 1.0}
    help = {"prior_power": "exponent of the class prior added as log-prior (1 = Balanced Softmax)"}

    def stages(self, recipe):
        # the loss is this method's own: name it after the method and put its options in the stage,
        # so that the stage key (and the stage cache) tells it apart from plain CE
        return [recipe.representation(loss="balanced-softmax", prior_power=self.options["prior_power"])]

    def loss(self, out, batch, state):
        log_prior = torch.log(state.data.class_counts.float().clamp_min(1))
        adjusted = out.logits.float() + state.stage.opts["prior_power"] * log_prior
        return F.cross_entropy(adjusted, batch["y"])
