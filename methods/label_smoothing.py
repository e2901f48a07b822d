from torch.nn import functional as F

from ltbench import Method, register_method


@register_method("label-smoothing", summary="CE with label smoothing in stage 1, then (default) label-aware "
                 "smoothing with a re-trained classifier in stage 2 (MiSLAS, Zhong et al. 2021)")
class LabelSmoothing(Method):
    defaults = {"epsilon": 0.1, "stage2": "las", "epsilon_head": 0.3, "epsilon_tail": 0.0}
    choices = {"stage2": ("las", "none")}
    help = {"epsilon": "smoothing of the stage-1 cross-entropy",
            "stage2": "las: re-train the classifier with label-aware smoothing; none: stage 1 only",
            "epsilon_head": "LAS smoothing of the largest class", "epsilon_tail": "LAS smoothing of the smallest class"}

    def stages(self, recipe):
        stages = [recipe.representation(label_smoothing=self.options["epsilon"])]
        if self.options["stage2"] == "las":
            stages.append(recipe.classifier(loss="label-smoothing", epsilon_head=self.options["epsilon_head"],
                                            epsilon_tail=self.options["epsilon_tail"]))
        return stages

    def loss(self, out, batch, state):
        if state.stage.loss != "label-smoothing":
            return super().loss(out, batch, state)
        counts = state.data.class_counts.float()
        # MiSLAS' linear rule: epsilon goes from epsilon_head (largest class) to epsilon_tail (smallest)
        position = (counts - counts.min()) / (counts.max() - counts.min()).clamp_min(1)
        opts = state.stage.opts
        epsilon = (opts["epsilon_tail"] + (opts["epsilon_head"] - opts["epsilon_tail"]) * position)[batch["y"]]
        log_probs = F.log_softmax(out.logits.float(), dim=1)
        nll = -log_probs.gather(1, batch["y"][:, None]).squeeze(1)
        return ((1 - epsilon) * nll - epsilon * log_probs.mean(1)).mean()
