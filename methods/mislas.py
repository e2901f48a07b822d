"""MiSLAS (Zhong et al., CVPR 2021), both stages: stage 1 mixup (alpha 1; methods/mixup.py, dvlab-research/MiSLAS
train_stage1.py with config/cifar10/cifar10_imb001_stage1_mixup.yaml:45-46), stage 2 label-aware smoothing with
learnable weight scaling and optional shift-BN on the mixup model (methods/las.py, train_stage2.py with
config/cifar10/cifar10_imb001_stage2_mislas.yaml). Each stage keeps its own hooks (``stage_hooks``): mixup's
batch transform and loss train stage 1, label-aware smoothing's stage 2. Defaults are CIFAR-10-LT IF100's; the
other configs' smoothing and shift_bn values are listed in methods/las.py (pass them with -o)."""
from ltbench import register_method
from ltbench.methods.las import LabelAwareSmoothing
from ltbench.methods.mixup import Mixup


@register_method("mislas", summary="MiSLAS: mixup stage 1, then label-aware smoothing with learnable weight "
                 "scaling (and optional shift-BN) on the classifier (Zhong et al. 2021)")
class MiSLAS(LabelAwareSmoothing):
    family = "augmentation"
    reference = "dvlab-research/MiSLAS train_stage1.py, train_stage2.py"
    defaults = {"alpha": 1.0, **LabelAwareSmoothing.defaults}
    ranges = {"alpha": (0, 100), **LabelAwareSmoothing.ranges}
    help = {"alpha": "stage-1 mixup: Beta(alpha, alpha) of the mixing weight", **LabelAwareSmoothing.help}

    def __init__(self, **options):
        super().__init__(**options)
        self.mixup = Mixup(alpha=self.options["alpha"])

    def stages(self, recipe):
        return [*self.mixup.stages(recipe), super().stages(recipe)[1]]

    def stage_hooks(self, index):
        return self.mixup if index == 0 else self
