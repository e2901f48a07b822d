import torch

from ltbench import Method, Range, Stage, register_method, tau_normalize


@register_method("tau-norm", summary="tau-normalised classifier: W_c / ||W_c||^tau, tau picked on validation "
                 "data (Kang et al. 2020)")
class TauNorm(Method):
    family = "decoupling"
    reference = "facebookresearch/classifier-balancing"
    defaults = {"tau": -1.0, "grid_step": 0.1}
    # grid_step from 0.001: a finer grid of 2,001+ candidates only fits noise of the validation split
    ranges = {"tau": Range(0, 2, also=(-1,)), "grid_step": (0.001, 2)}
    help = {"tau": "fixed tau in [0, 2]; -1 picks it on the validation split",
            "grid_step": "step of the tau grid over [0, 2]"}

    def tunes_on_validation(self):
        return self.options["tau"] < 0

    def stages(self, recipe):
        return [recipe.representation(), Stage("tau-norm", trainable="none", post="tau-norm")]

    @torch.no_grad()
    def post_stage(self, state):
        classifier = state.model.classifier
        weight = classifier.weight.detach().clone()
        tau = self.options["tau"]
        scores = {}
        if tau < 0:  # balanced validation split, never the test set
            features, labels = state.evaluate("val", features_only=True)
            for step in range(int(round(2 / self.options["grid_step"])) + 1):
                candidate = round(step * self.options["grid_step"], 6)
                tau_normalize(classifier, candidate, weight)
                accuracy = (state.model.head(features).argmax(1) == labels).float().mean().item()
                scores[candidate] = round(100 * accuracy, 3)
            tau = max(scores, key=lambda t: (scores[t], -t))
        tau_normalize(classifier, tau, weight)
        state.log(f"tau-norm: tau = {tau:g}" + (f" (val acc {scores[tau]:.2f}%)" if scores else ""))
        return {"tau": tau, "val_acc_by_tau": scores}
