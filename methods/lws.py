from ltbench import LogitScales, Method, Stage, register_method


@register_method("lws", summary="learnable weight scaling: frozen CE classifier, one learned scale per class, "
                 "class-balanced sampling (Kang et al. 2020)")
class LearnableWeightScaling(Method):
    def stages(self, recipe):
        return [recipe.representation(),
                Stage("scales", optim=recipe.stage2, trainable="scales", sampler="class-balanced")]

    def on_stage_start(self, state):
        # added only now, so that stage 1 is exactly CE's (same key, same parameters)
        if state.stage.trainable == "scales" and "logit_scales" not in state.model.extras:
            state.model.extras["logit_scales"] = LogitScales(state.data.num_classes).to(state.data.device)
