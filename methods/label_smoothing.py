"""Label smoothing as BagofTricks-LT's "CrossEntropyLabelSmooth" row: one stage of CE on targets
(1 - epsilon) onehot + epsilon / K (lib/loss/loss_impl/cross_entropy_label_smooth_loss.py:31; epsilon 0.1,
lib/config/default.py:81), which is torch's ``label_smoothing``. MiSLAS' label-aware smoothing is ``las``."""
from ltbench import Method, register_method


@register_method("label-smoothing", summary="single-stage CE with label smoothing, epsilon 0.1 (BagofTricks-LT)")
class LabelSmoothing(Method):
    family = "baseline"
    reference = "zhangyongshun/BagofTricks-LT lib/loss/loss_impl/cross_entropy_label_smooth_loss.py:31"
    defaults = {"epsilon": 0.1}
    ranges = {"epsilon": (0, 1, "[)")}
    help = {"epsilon": "smoothing: targets (1 - epsilon) onehot + epsilon / num_classes, in [0, 1)"}

    def stages(self, recipe):
        return [recipe.representation(label_smoothing=self.options["epsilon"])]
