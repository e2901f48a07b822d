from ltbench import Method, register_method


@register_method("ce", summary="plain cross-entropy, instance-balanced sampling (stage 1 of every decoupled method)")
class CrossEntropy(Method):
    family = "baseline"
    reference = "zhangyongshun/BagofTricks-LT configs/cao_cifar/baseline"

    def stages(self, recipe):
        return [recipe.representation()]
