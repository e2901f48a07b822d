from ltbench import Method, register_method


@register_method("crt", summary="classifier re-training: frozen CE features, re-initialised classifier, "
                 "class-balanced sampling (Kang et al. 2020)")
class ClassifierRetraining(Method):
    def stages(self, recipe):
        return [recipe.representation(), recipe.classifier()]
