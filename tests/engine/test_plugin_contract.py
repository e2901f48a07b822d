"""The plugin contract of #28: a method's hooks either run on a stage of its own or the run is refused
(never CE's numbers under another name), ``post_stage`` sees the logits before the method's ``test_logits``,
and no hook of a method (``setup`` included) can change the shared CE stage that other runs reuse."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ltbench.config import RunConfig
from ltbench.engine.plan import plan_run
from tests.helpers import FAST, fast_run, invoke, logits_of

# one body per hook that trains a stage (and setup), each as a plugin would write it
HOOK_BODIES = {
    "loss": "def loss(self, out, batch, state):\n        return 2 * super().loss(out, batch, state)",
    "transform_batch": "def transform_batch(self, batch, state):\n        return {**batch, 'x': batch['x'].flip(3)}",
    "sampler": "def sampler(self, state):\n        return 'class-balanced'",
    "class_weights": "def class_weights(self, state):\n        return 1 / state.data.class_counts.float()",
    "feature_maps": "def feature_maps(self, stage):\n        return [1]",
    "trainable_parameters": "def trainable_parameters(self, model, stage):\n"
                            "        return list(model.classifier.parameters())",
    "on_epoch_start": "def on_epoch_start(self, state):\n        self.epochs_seen = state.epoch",
    "on_epoch_end": "def on_epoch_end(self, state):\n        self.epochs_seen = state.epoch",
    "on_stage_start": "def on_stage_start(self, state):\n        state.log('mine')",
    "setup": "def setup(self, model, data):\n        model.backbone.requires_grad_(True)",
}

HOOK_PLUGIN = '''
from ltbench import Method, register_method


@register_method({name!r})
class Hooked(Method):
    def stages(self, recipe):
        return [recipe.representation({loss})]

    {body}
'''


def hook_plugin(folder: Path, hook: str, own_stage: bool = False) -> str:
    """A plugin overriding HOOK whose only stage is the shared CE stage (or, OWN_STAGE, one of its own)."""
    name = f"my-{'own-' if own_stage else ''}{hook.replace('_', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{hook}.py").write_text(HOOK_PLUGIN.format(name=name, loss=f"loss={name!r}" if own_stage else "",
                                                          body=HOOK_BODIES[hook]))
    return name


@pytest.mark.parametrize("hook", sorted(HOOK_BODIES))
def test_a_hook_only_the_shared_stage_would_run_is_refused_at_plan_time(tmp_path, hook):
    name = hook_plugin(tmp_path / "plugins", hook)
    result = invoke("run", "--method", name, "--plugins", tmp_path / "plugins", *FAST, "--results", tmp_path / "out")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"method '{name}' overrides {hook}, which would never run" in lines[0]
    assert f'recipe.representation(loss="{name}")' in lines[0]
    assert not (tmp_path / "out").exists(), "refused before anything is built or written"
    # the fix the message gives plans fine: the stage is the method's own, with a key of its own
    fixed = hook_plugin(tmp_path / "fixed", hook, own_stage=True)
    plan = plan_run(RunConfig(method=fixed, plugins=[str(tmp_path / "fixed")], recipe="smoke", precision="fp32",
                              device="cpu"))
    assert not plan.stages[0].core_trained and plan.hooks(0) is plan.method


CRT_WITH_HOOKS = '''
from ltbench import register_method
from ltbench.registry import METHODS


@register_method("crt-with-loss")
class CRTWithLoss(METHODS.get("crt").obj):
    """A hook for its own stage 2 (as cRT, LWS and LAS have): stage 1 stays the shared CE stage."""
    def loss(self, out, batch, state):
        return super().loss(out, batch, state)


@register_method("ce-then-nothing")
class CEThenNothing(METHODS.get("crt").obj):
    """Its only stage of its own trains nothing, so its loss would never run either."""
    def stages(self, recipe):
        from ltbench import Stage
        return [recipe.representation(), Stage("nothing", trainable="none")]

    def loss(self, out, batch, state):
        return 0 * super().loss(out, batch, state)
'''


def test_hooks_for_a_stage_of_its_own_after_the_shared_one_plan_fine(tmp_path):
    (tmp_path / "crt_with_hooks.py").write_text(CRT_WITH_HOOKS)
    config = dict(plugins=[str(tmp_path)], recipe="smoke", precision="fp32", device="cpu")
    plan = plan_run(RunConfig(method="crt-with-loss", **config))
    assert plan.stages[0].core_trained and plan.hooks(1) is plan.method
    result = invoke("run", "--method", "ce-then-nothing", "--plugins", tmp_path, *FAST, "--results", tmp_path / "out")
    assert result.exit_code != 0 and "overrides loss, which would never run" in result.output


@pytest.mark.parametrize("method", ["ce", "crt", "lws", "las", "ncm", "tau-norm", "posthoc-la", "label-smoothing",
                                    "dasl", "mislas", "focal"])
def test_built_in_methods_plan_fine(method):
    plan_run(RunConfig(method=method, recipe="smoke", precision="fp32", device="cpu"))


def test_dasl_with_a_shared_stage_1_plans_fine():
    plan = plan_run(RunConfig(method="dasl", method_options={"use_in": "stage2"}, recipe="smoke", precision="fp32",
                              device="cpu"))
    assert plan.stages[0].core_trained


SHIFT_PLUGIN = '''
import torch
from ltbench import Method, Stage, register_method


@register_method("shift-tuner")
class ShiftTuner(Method):
    """test_logits adds a large shift; post_stage (a tuner) reads the validation logits."""
    def stages(self, recipe):
        return [recipe.representation(), Stage("tune", trainable="none", post="tune")]

    def post_stage(self, state):
        logits, labels, _ = state.evaluate("val")
        return {"val_max": float(logits.max())}

    def test_logits(self, logits, data):
        return logits + 1000.0
'''


def test_post_stage_sees_the_logits_before_the_methods_test_logits(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "shift.py").write_text(SHIFT_PLUGIN)
    result = invoke("run", "--method", "shift-tuner", "--plugins", tmp_path / "plugins", *FAST,
                    "--results", tmp_path / "out", "--run-name", "shift")
    assert result.exit_code == 0, result.output
    run = tmp_path / "out" / "runs" / "shift"
    post = json.loads((run / "metrics.json").read_text())["stages"][-1]["post"]
    assert post["val_max"] < 500, "the validation logits post_stage tunes on carry no test-time shift"
    assert np.load(run / "test_logits.npz")["logits"].min() > 500, "the test logits do"


SETUP_PROBES = '''
import torch
from ltbench import Method, register_method


class CRTLike(Method):
    def stages(self, recipe):
        return [recipe.representation(), recipe.classifier()]


@register_method("halve-weights")
class HalveWeights(CRTLike):
    """A setup meant for its own stage 2 that, run before stage 1, would change the shared CE stage."""
    @torch.no_grad()
    def setup(self, model, data):
        for p in model.parameters():
            p.mul_(0.5)


@register_method("slow-bn")
class SlowBN(CRTLike):
    """BatchNorm momentum 0.01, a natural wish for one's own stage 2."""
    def setup(self, model, data):
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.01
'''



@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probes")
    (folder / "probes.py").write_text(SETUP_PROBES)
    return folder


@pytest.mark.parametrize("probe", ["halve-weights", "slow-bn"])
def test_a_methods_setup_cannot_change_the_shared_stage(tmp_path, ce_alone, probes, probe):
    """#28 item 2: setup runs after the shared stage (trained or loaded on a model no method touched), before
    the method's own first stage; a later `ce` in the same results folder reuses an artifact equal to its own."""
    first = fast_run(tmp_path / "out", probe, probe, "--plugins", probes)
    assert not first["stages"][0]["reused"]
    ce = fast_run(tmp_path / "out", "ce", "ce")
    assert ce["stages"][0]["reused"] and ce["stages"][0]["key"] == first["stages"][0]["key"]
    np.testing.assert_array_equal(logits_of(tmp_path / "out", "ce"), ce_alone)
    if probe == "halve-weights":  # and the setup still shapes the method's own stage
        fast_run(tmp_path / "out", "crt", "crt")
        assert not np.array_equal(logits_of(tmp_path / "out", probe), logits_of(tmp_path / "out", "crt"))
