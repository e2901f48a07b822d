"""Post-hoc logit adjustment (Menon et al. 2021): the shared CE stage 1 as it is, and at test time
z - tau * log pi, pi the train class prior (google-research logit_adjustment/main.py:136-139: logits -
log(base_probs ** tau + 1e-12); tau 1, main.py:42). The adjustment is a test-time transform of the final
(untrained) stage, never written into the shared CE artifact that ce, crt, lws, ... reuse."""
from ltbench import Method, Stage, register_method
from ltbench.methods.la_loss import log_prior


@register_method("posthoc-la", summary="post-hoc logit adjustment of the CE model: logits - tau * log prior "
                 "(Menon et al. 2021)")
class PosthocLogitAdjustment(Method):
    family = "logit adjustment"
    reference = "google-research/google-research logit_adjustment/main.py:136-139"
    defaults = {"tau": 1.0}
    ranges = {"tau": (0, 10)}
    help = {"tau": "weight of the log prior subtracted from the test logits (0: plain CE)"}

    def stages(self, recipe):
        return [recipe.representation(), Stage("posthoc-la", trainable="none", options={"tau": self.options["tau"]})]

    def test_logits(self, logits, data):
        return logits - log_prior(data.class_counts, self.options["tau"]).to(logits.device)
