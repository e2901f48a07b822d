"""DRW, deferred re-weighting (Cao et al. 2019): plain CE until the first learning-rate decay, then CE weighted
by the class-balanced "effective number" weights of Cui et al. 2019, w_c = (1 - beta) / (1 - beta^n_c)
normalised to sum to the number of classes; before it beta = 0, i.e. all weights 1 (kaidic/LDAM-DRW
cifar_train.py:206-213, betas [0, 0.9999], idx = epoch // 160 of 200 epochs; the weighted mean of
nn.CrossEntropyLoss(weight=...), :217-218). The deferred epoch is a fraction of the stage (0.8 = 160/200),
so it stays at the first decay of shorter recipes (cpu: 24 of 30)."""
import torch

from ltbench import Method, register_method


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), scaled to sum to the number of classes; beta = 0 gives all ones."""
    counts = counts.double()
    weights = (1 - beta) / (1 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts))
    return weights / weights.sum() * len(counts)


@register_method("drw", summary="deferred re-weighting: CE, then effective-number class weights from the first "
                 "lr decay on (Cao et al. 2019)")
class DeferredReweighting(Method):
    family = "re-weighting"
    reference = "kaidic/LDAM-DRW cifar_train.py:206-213"
    defaults = {"beta": 0.9999, "defer": 0.8}
    ranges = {"beta": (0, 1, "[)"), "defer": (0, 1, "[)")}
    help = {"beta": "effective-number beta of the deferred weights",
            "defer": "fraction of the stage after which the weights start (0.8: epoch 160 of 200)"}

    def stages(self, recipe):
        defer_epoch = round(self.options["defer"] * recipe.stage1.epochs)
        return [recipe.representation(loss="drw", beta=self.options["beta"], defer_epoch=defer_epoch)]

    def class_weights(self, state):
        """Asked at every step, so computed once per (stage, beta, class counts) and kept."""
        opts = state.stage.opts
        beta = opts["beta"] if state.epoch >= opts["defer_epoch"] else 0.0
        key = (state.stage_index, beta, id(state.data.class_counts))
        if getattr(self, "_weights_key", None) != key:
            self._weights_key = key
            self._weights = effective_number_weights(state.data.class_counts, beta).to(state.data.device,
                                                                                      torch.float32)
        return self._weights
