"""cRT (Kang et al. 2020): the CE stage 1 frozen, the classifier re-initialised and re-trained under
class-balanced sampling. Reference: facebookresearch/classifier-balancing (run_networks.py:115-120 freezes
the features by requires_grad only, :247-249 keeps every network in train mode, :680-684 re-initialises the
classifier) and BagofTricks-LT configs/cao_cifar/two_stage/classifier_balance/cRT/cifar10_im100.yaml."""
from ltbench import Method, register_method


@register_method("crt", summary="classifier re-training: frozen CE features, re-initialised classifier, "
                 "class-balanced sampling (Kang et al. 2020)")
class ClassifierRetraining(Method):
    family = "decoupling"
    reference = "facebookresearch/classifier-balancing run_networks.py"
    defaults = {"bn": "train"}
    choices = {"bn": ("train", "frozen")}
    help = {"bn": "train: the frozen backbone's BN statistics follow the class-balanced batches (the "
                  "references); frozen: they stay as stage 1 left them"}

    def stages(self, recipe):
        return [recipe.representation(), recipe.classifier(bn=self.options["bn"])]
