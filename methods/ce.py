from ltbench import Method, register_method


@register_method("ce", summary="plain cross-entropy, instance-balanced sampling (stage 1 of every decoupled method)")
class CrossEntropy(Method):
    def stages(self, recipe):
        return [recipe.representation()]
