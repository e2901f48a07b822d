"""LWS (Kang et al. 2020): the CE classifier frozen, one learnable scale per class trained under
class-balanced sampling. Reference: classifier-balancing models/TauNormClassifier.py:22-28 (scales start at
1, fc frozen), run_networks.py:247-249 (BN in train mode), config/ImageNet_LT/cls_lws.yaml:34 (5 epochs,
the recipe's ``lws_epochs``); BagofTricks-LT's CIFAR LWS config runs cRT's 30-epoch schedule."""
from ltbench import LogitScales, Method, register_method


@register_method("lws", summary="learnable weight scaling: frozen CE classifier, one learned scale per class, "
                 "class-balanced sampling (Kang et al. 2020)")
class LearnableWeightScaling(Method):
    family = "decoupling"
    reference = "facebookresearch/classifier-balancing models/TauNormClassifier.py"
    defaults = {"bn": "train"}
    choices = {"bn": ("train", "frozen")}
    help = {"bn": "train: the frozen backbone's BN statistics follow the class-balanced batches (the "
                  "references); frozen: they stay as stage 1 left them"}

    def stages(self, recipe):
        optim = recipe.stage2.with_epochs(recipe.lws_epochs) if recipe.lws_epochs else recipe.stage2
        return [recipe.representation(),
                recipe.classifier("scales", trainable="scales", reinit=False, bn=self.options["bn"], optim=optim)]

    def on_stage_start(self, state):
        # runs on stage 2 only (the shared stage 1 is trained by the core's hooks), so stage 1 is exactly CE's
        if "logit_scales" not in state.model.extras:
            state.model.extras["logit_scales"] = LogitScales(state.data.num_classes).to(state.data.device)
