"""Logit-adjusted loss (Menon et al. 2021): cross-entropy on z + tau * log pi, pi the train class prior, one
stage; plain logits at test time (google-research logit_adjustment/utils.py:36-42: logits + log(base_probs **
tau + 1e-12), sparse softmax CE, batch mean; tau 1, main.py:42). With tau = 1 it is Balanced Softmax (log pi and
log n differ by a constant, which softmax ignores)."""
import torch
from torch.nn import functional as F

from ltbench import Method, register_method


def log_prior(counts: torch.Tensor, tau: float) -> torch.Tensor:
    """log(pi^tau + 1e-12), pi = counts / sum(counts) (the reference's base_probs)."""
    prior = counts.double() / counts.sum()
    return torch.log(prior ** tau + 1e-12).float()


@register_method("la-loss", summary="logit-adjusted loss: CE on logits + tau * log prior (Menon et al. 2021)")
class LogitAdjustedLoss(Method):
    family = "logit adjustment"
    reference = "google-research/google-research logit_adjustment/utils.py:36-42"
    defaults = {"tau": 1.0}
    ranges = {"tau": (0, 10)}
    help = {"tau": "weight of the log prior added to the logits in training (1: Balanced Softmax)"}

    def stages(self, recipe):
        return [recipe.representation(loss="la-loss", tau=self.options["tau"])]

    def loss(self, out, batch, state):
        adjust = log_prior(state.data.class_counts, state.stage.opts["tau"]).to(out.logits.device)
        return F.cross_entropy(out.logits.float() + adjust, batch["y"])
