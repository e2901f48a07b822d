"""DRW, deferred re-weighting (Cao et al. 2019): plain CE until the first learning-rate decay, then CE weighted
by the class-balanced "effective number" weights of Cui et al. 2019, w_c = (1 - beta) / (1 - beta^n_c)
normalised to sum to the number of classes; before it beta = 0, i.e. all weights 1 (kaidic/LDAM-DRW
cifar_train.py:206-213, betas [0, 0.9999], idx = epoch // 160 of 200 epochs; the weighted mean of
nn.CrossEntropyLoss(weight=...), :217-218). The deferred epoch is a fraction of the stage (0.8 = 160/200),
so it stays at the first decay of shorter recipes (cpu: 24 of 30).

beta per data set, as BagofTricks-LT's "DRW + ClassBalanceCE" configs (the published row it pairs with; same rule:
plain CE, then the effective-number weights from the 161st epoch, lib/loss/loss_impl/class_balanced_loss.py:30-40,
START_EPOCH 160): 0.9 on CIFAR-100-LT, 0.9999 on CIFAR-10-LT (``CBCE_BETA``); every other data set keeps
LDAM-DRW's 0.9999."""
import math

import torch

from ltbench import Method, register_method


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), scaled to sum to the number of classes; beta = 0 gives all ones."""
    counts = counts.double()
    weights = (1 - beta) / (1 - torch.pow(torch.as_tensor(beta, dtype=torch.float64), counts))
    return weights / weights.sum() * len(counts)


# BagofTricks-LT configs/cao_cifar at commit ce7859a, LOSS.ClassBalanceCE.BETA (line 28; line 27 in the IF-50
# CIFAR-10 files) of re_weighting/cbce/<dataset>_im<IF>.yaml and of two_stage/drw/cbce/<dataset>_im<IF>.yaml
# (DRW: True, START_EPOCH: 160), which agree: (ltbench data set, imbalance factor) -> beta
CBCE_BETA = {("cifar10-lt", 100): 0.9999, ("cifar10-lt", 50): 0.9999,
             ("cifar100-lt", 100): 0.9, ("cifar100-lt", 50): 0.9}


def reference_config(table: dict, dataset: str, imbalance: float | None):
    """The entry of ``table`` ((data set, IF) -> value) for this run: the data set's entry at its imbalance factor,
    or at the configured factor nearest to it on a log scale (IF 10 takes IF 50's; ties and an unknown IF take
    the larger factor); None for a data set the table does not name."""
    factors = [factor for name, factor in table if name == dataset]
    if not factors:
        return None
    if not imbalance or imbalance <= 0:
        return table[(dataset, max(factors))]
    nearest = min(factors, key=lambda factor: (abs(math.log(factor / imbalance)), -factor))
    return table[(dataset, nearest)]


@register_method("drw", summary="deferred re-weighting: CE, then effective-number class weights from the first "
                 "lr decay on (Cao et al. 2019)")
class DeferredReweighting(Method):
    family = "re-weighting"
    reference = "kaidic/LDAM-DRW cifar_train.py:206-213"
    defaults = {"beta": 0.9999, "defer": 0.8}
    ranges = {"beta": (0, 1, "[)"), "defer": (0, 1, "[)")}
    help = {"beta": "effective-number beta of the deferred weights; default per data set as BagofTricks-LT's "
                    "DRW + ClassBalanceCE configs: 0.9 on cifar100-lt, 0.9999 on cifar10-lt and every other data set "
                    "(LDAM-DRW's); the run records the value used",
            "defer": "fraction of the stage after which the weights start (0.8: epoch 160 of 200)"}

    @classmethod
    def dataset_defaults(cls, dataset, imbalance, options):
        beta = reference_config(CBCE_BETA, dataset, imbalance)
        return {} if beta is None else {"beta": beta}

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
