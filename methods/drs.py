"""DRS, deferred re-sampling (Cao et al. 2019; BagofTricks-LT's two-stage DRS): CE with instance-balanced sampling
until the first learning-rate decay, then class-balanced sampling (a class uniformly, then an image of it)
for the rest of the stage. BagofTricks-LT switches its dataset's sampler at TRAIN.TWO_STAGE.START_EPOCH
(lib/dataset/*.py ``update``: ``self.epoch = max(0, epoch - START_EPOCH) if DRS``, and __getitem__ samples
"balance" only once ``self.epoch`` > 0), 160 of 200 in its CIFAR configs; LDAM-DRW's "Resample" rule is the same
class-balanced sampler (ImbalancedDatasetSampler, cifar_train.py:196-198). The switch is a fraction of the stage."""
from ltbench import Method, register_method


@register_method("drs", summary="deferred re-sampling: CE, instance sampling, class-balanced sampling from the "
                 "first lr decay on (Cao et al. 2019)")
class DeferredResampling(Method):
    family = "re-sampling"
    reference = "zhangyongshun/BagofTricks-LT lib/dataset (TRAIN.TWO_STAGE.DRS)"
    defaults = {"defer": 0.8}
    ranges = {"defer": (0, 1, "[)")}
    help = {"defer": "fraction of the stage after which sampling is class-balanced (0.8: epoch 160 of 200)"}

    def stages(self, recipe):
        return [recipe.representation(loss="drs", resample_epoch=round(self.options["defer"] * recipe.stage1.epochs))]

    def sampler(self, state):
        return "class-balanced" if state.epoch >= state.stage.opts["resample_epoch"] else "instance"
