"""tau-norm (Kang et al. 2020): no training after CE's stage 1; W_c <- W_c / ||W_c||^tau.

Two references, two configurations (option ``bias``):

- ``drop`` (default), Kang et al.: facebookresearch/classifier-balancing tau_norm.py:88-114@f162ade scores
  ``dotproduct_similarity(feat, pnorm(weights, p))``, the classifier's bias left out, for p over the grid
  ``np.linspace(0, 2, 21)``; ltbench picks tau on the validation split (``tau=-1``).
- ``keep``, BagofTricks-LT: lib/net/network.py:113-117@ce7859a normalises only ``classifier.weight`` and keeps
  ``classifier.bias``; configs/cao_cifar/two_stage/classifier_balance/tau_norm/cifar10_im100.yaml@ce7859a fixes
  TEST.TAU_NORM.TAU 1.0 on a CLASSIFIER with BIAS True. Its gallery row (72.70 on CIFAR-10-LT IF100) is
  ``-o tau=1 -o bias=keep``, and ``ltbench table --with-reference`` sets it beside runs of exactly that.
"""
import torch

from ltbench import Method, Range, Stage, register_method, tau_normalize


@register_method("tau-norm", summary="tau-normalised classifier: W_c / ||W_c||^tau, tau picked on validation "
                 "data, bias dropped (Kang et al. 2020); -o tau=1 -o bias=keep is BagofTricks-LT's row")
class TauNorm(Method):
    family = "decoupling"
    reference = ("facebookresearch/classifier-balancing tau_norm.py:88-114 (bias dropped); "
                 "BagofTricks-LT lib/net/network.py:113-117 (bias kept, tau 1)")
    defaults = {"tau": -1.0, "grid_step": 0.1, "bias": "drop"}
    choices = {"bias": ("drop", "keep")}
    # grid_step from 0.001: a finer grid of 2,001+ candidates only fits noise of the validation split
    ranges = {"tau": Range(0, 2, also=(-1,)), "grid_step": (0.001, 2)}
    help = {"tau": "fixed tau in [0, 2]; -1 picks it on the validation split",
            "grid_step": "step of the tau grid over [0, 2]",
            "bias": "drop: the classifier bias is zeroed (Kang et al., classifier-balancing tau_norm.py:88-114"
                    "@f162ade); keep: it stays as stage 1 left it (BagofTricks-LT lib/net/network.py:113-117"
                    "@ce7859a, with tau = 1 in its tau_norm configs: -o tau=1 -o bias=keep)"}

    def tunes_on_validation(self):
        return self.options["tau"] < 0

    def stages(self, recipe):
        return [recipe.representation(), Stage("tau-norm", trainable="none", post="tau-norm")]

    @torch.no_grad()
    def post_stage(self, state):
        classifier = state.model.classifier
        weight = classifier.weight.detach().clone()
        bias = None if classifier.bias is None else classifier.bias.detach().clone()

        def normalize(tau: float) -> None:
            tau_normalize(classifier, tau, weight)  # zeroes the bias (Kang)
            if self.options["bias"] == "keep" and bias is not None:
                classifier.bias.copy_(bias)

        tau = self.options["tau"]
        scores = {}
        if tau < 0:  # balanced validation split, never the test set
            features, labels = state.evaluate("val", features_only=True)
            for step in range(int(round(2 / self.options["grid_step"])) + 1):
                candidate = round(step * self.options["grid_step"], 6)
                normalize(candidate)
                accuracy = (state.model.head(features).argmax(1) == labels).float().mean().item()
                scores[candidate] = round(100 * accuracy, 3)
            tau = max(scores, key=lambda t: (scores[t], -t))
        normalize(tau)
        state.log(f"tau-norm: tau = {tau:g}, bias {'kept' if self.options['bias'] == 'keep' else 'dropped'}"
                  + (f" (val acc {scores[tau]:.2f}%)" if scores else ""))
        return {"tau": tau, "val_acc_by_tau": scores}
