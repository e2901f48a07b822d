"""The long-tail comparison baselines (re-weighting, margin, logit adjustment, mixup): each one's defining math on
a tiny tensor, as its reference implementation has it (the method files cite file and line), the extension
points they use, and a smoke run of each through the CLI."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ltbench.models  # noqa: F401  (registers the CIFAR ResNets with timm)
from ltbench.config import Stage, get_recipe
from ltbench.errors import ConfigError
from ltbench.method import DataInfo, Method, StageState, create_method
from ltbench.methods.cb import sigmoid_focal
from ltbench.methods.drw import effective_number_weights
from ltbench.methods.focal import focal_loss
from ltbench.methods.la_loss import log_prior
from ltbench.methods.ldam_drw import CosineClassifier, ldam_margins
from ltbench.models import LogitScales, build_model
from tests.helpers import FAST, invoke, table_rows

COUNTS = torch.tensor([500, 100, 20, 5])
NEW = ("focal", "cb", "drw", "drs", "ldam-drw", "balanced-softmax", "la-loss", "posthoc-la", "mixup", "mislas")


def state_for(method: Method, epoch: int = 0, recipe: str = "paper", index: int = 0) -> StageState:
    stage = method.stages(get_recipe(recipe))[index]
    data = DataInfo(len(COUNTS), COUNTS, torch.zeros(len(COUNTS)), torch.device("cpu"))
    return StageState(stage, index, data, model=None, epoch=epoch, epochs=stage.epochs)


def batch_of(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, len(COUNTS), generator=generator)
    labels = torch.randint(0, len(COUNTS), (n,), generator=generator)
    return SimpleNamespace(logits=logits, features=None, feature_maps=[]), {"y": labels}


def test_focal_with_gamma_0_is_ce_and_down_weights_easy_images():
    out, batch = batch_of()
    ce = F.cross_entropy(out.logits, batch["y"], reduction="none")
    torch.testing.assert_close(focal_loss(out.logits, batch["y"], 0.0), ce.mean())
    p = torch.exp(-ce)
    torch.testing.assert_close(focal_loss(out.logits, batch["y"], 2.0), ((1 - p) ** 2 * ce).mean())
    method = create_method("focal", {"gamma": 0})
    torch.testing.assert_close(method.loss(out, batch, state_for(method)), ce.mean())


def test_class_balanced_weights_are_the_effective_number_rule():
    beta = 0.999
    expected = torch.tensor([(1 - beta) / (1 - beta ** n) for n in COUNTS.tolist()], dtype=torch.float64)
    torch.testing.assert_close(effective_number_weights(COUNTS, beta), expected / expected.sum() * 4)
    assert torch.equal(effective_number_weights(COUNTS, 0.0), torch.ones(4, dtype=torch.float64))
    out, batch = batch_of()
    cb = create_method("cb", {"beta": beta})
    weights = effective_number_weights(COUNTS, beta).float()
    torch.testing.assert_close(cb.loss(out, batch, state_for(cb)), F.cross_entropy(out.logits, batch["y"], weight=weights))
    focal = create_method("cb", {"beta": beta, "loss": "focal", "gamma": 0})
    bce = F.binary_cross_entropy_with_logits(out.logits, F.one_hot(batch["y"], 4).float(), reduction="none")
    expected_focal = (bce.sum(1) * weights[batch["y"]]).sum() / len(batch["y"])  # gamma 0: weighted sigmoid BCE
    torch.testing.assert_close(focal.loss(out, batch, state_for(focal)), expected_focal)
    torch.testing.assert_close(sigmoid_focal(out.logits, batch["y"], torch.ones(4), 0.0), bce.sum() / len(batch["y"]))


def test_cb_and_drw_take_bagoftricks_configs_per_data_set(monkeypatch):
    """#28 item 5: beta 0.9 on CIFAR-100-LT (cbce, drw + cbce), 0.9999 on CIFAR-10-LT; ClassBalanceFocal's (beta,
    gamma) per data set and IF (configs/cao_cifar/re_weighting/cbfocal/*.yaml); an option the user sets wins; the
    resolved value is the method's option, hence its stage's, its key's and config.json's."""
    from ltbench.config import RunConfig
    from ltbench.engine.plan import plan_run
    from ltbench.engine.run_folder import resolved_config
    from ltbench.methods.drw import CBCE_BETA

    def options(name, dataset, imbalance=100.0, **given):
        return create_method(name, given, dataset=dataset, imbalance=imbalance).options

    assert options("cb", "cifar100-lt")["beta"] == 0.9 and options("cb", "cifar100-lt", 50.0)["beta"] == 0.9
    assert options("cb", "cifar10-lt")["beta"] == 0.9999 and options("cb", "cifar10-lt", 50.0)["beta"] == 0.9999
    assert create_method("cb", dataset="cifar100-lt", imbalance=100.0).stages(get_recipe("paper"))[0].opts["beta"] == 0.9
    focal = lambda dataset, imbalance: tuple(options("cb", dataset, imbalance, loss="focal")[k] for k in ("beta", "gamma"))  # noqa: E731
    assert focal("cifar10-lt", 100.0) == (0.9999, 1.0) and focal("cifar10-lt", 50.0) == (0.9999, 2.0)
    assert focal("cifar100-lt", 100.0) == (0.9, 1.0) and focal("cifar100-lt", 50.0) == (0.99, 1.0)
    assert focal("cifar100-lt", 10.0) == (0.99, 1.0) and focal("cifar100-lt", 200.0) == (0.9, 1.0)  # nearest IF
    assert focal("digits-lt", 20.0) == (0.9999, 1.0) and create_method("cb").options["gamma"] == 1.0
    assert options("cb", "cifar100-lt", beta="0.5")["beta"] == 0.5  # -o wins
    assert options("drw", "cifar100-lt")["beta"] == 0.9 and options("drw", "cifar10-lt")["beta"] == 0.9999
    assert options("drw", "imagenet-lt", None)["beta"] == 0.9999
    assert options("ldam-drw", "cifar100-lt")["beta"] == 0.9999  # LDAM-DRW's and BagofTricks-LT's LDAM: 0.9999

    def planned(**given):
        return plan_run(RunConfig(method="cb", method_options=given, dataset="digits-lt", recipe="smoke",
                                  precision="fp32", device="cpu"))

    default = planned()
    monkeypatch.setitem(CBCE_BETA, ("digits-lt", 20), 0.9)  # digits-lt as a CIFAR-100-like setting
    resolved, explicit = planned(), planned(beta=0.9)
    assert resolved.method.options["beta"] == 0.9 and resolved.stages[0].opts["beta"] == 0.9
    assert resolved.keys == explicit.keys != default.keys and resolved.run_key == explicit.run_key
    config = resolved_config(resolved, "probe")
    assert config["method_options"]["beta"] == 0.9 and config["method_defaults"]["beta"] == 0.9
    assert config["stages"][0]["options"]["beta"] == 0.9


def test_drw_weights_start_at_the_first_lr_decay_of_each_recipe():
    drw = create_method("drw")
    assert state_for(drw).stage.opts["defer_epoch"] == 160  # epoch 160 of 200, LDAM-DRW
    assert state_for(drw, recipe="cpu").stage.opts["defer_epoch"] == 24  # the cpu recipe's first decay
    assert torch.equal(drw.class_weights(state_for(drw, epoch=159)), torch.ones(4))
    late = drw.class_weights(state_for(drw, epoch=160))
    torch.testing.assert_close(late, effective_number_weights(COUNTS, 0.9999).float())
    assert late[3] > late[0]


def test_drs_switches_to_class_balanced_sampling_at_its_epoch():
    drs = create_method("drs")
    assert drs.sampler(state_for(drs, epoch=159)) == "instance"
    assert drs.sampler(state_for(drs, epoch=160)) == "class-balanced"
    assert not drs.stages(get_recipe("paper"))[0].core_trained  # its own stage 1, not CE's


def test_ldam_margins_follow_n_to_the_minus_quarter_and_the_loss_subtracts_s_times_the_margin():
    margins = ldam_margins(COUNTS, 0.5)
    expected = COUNTS.double() ** -0.25
    torch.testing.assert_close(margins, expected * 0.5 / expected.max())
    assert margins[3] == pytest.approx(0.5) and margins.argmax() == 3
    ldam = create_method("ldam-drw")
    state = state_for(ldam)
    out, batch = batch_of()
    cosine = out.logits.tanh()  # cosines in [-1, 1]
    out.logits = 30 * cosine  # what CosineClassifier returns
    reference = torch.where(F.one_hot(batch["y"], 4).bool(), cosine - margins.float()[batch["y"]][:, None], cosine)
    torch.testing.assert_close(ldam.loss(out, batch, state), F.cross_entropy(30 * reference, batch["y"]))


def test_ldam_cosine_classifier_has_unit_class_vectors_and_replaces_the_linear_layer():
    head = CosineClassifier(8, 4, scale=30.0)
    torch.testing.assert_close(head.weight.norm(dim=0), torch.ones(4))
    x = torch.randn(5, 8)
    torch.testing.assert_close(head(x), 30 * F.normalize(x, dim=1) @ F.normalize(head.weight, dim=0))
    assert head(x).abs().max() <= 30 + 1e-4
    model = build_model("resnet20", 4, 3)
    model.replace_classifier(create_method("ldam-drw").classifier(model.backbone.num_features, 4))
    assert isinstance(model.classifier, CosineClassifier) and not list(model.backbone.get_classifier().parameters())
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 4)


def test_logit_adjusted_loss_with_tau_1_is_balanced_softmax_and_tau_0_is_ce():
    out, batch = batch_of()
    la, bs = create_method("la-loss", {"tau": 1.0}), create_method("balanced-softmax")
    torch.testing.assert_close(la.loss(out, batch, state_for(la)), bs.loss(out, batch, state_for(bs)))
    torch.testing.assert_close(bs.loss(out, batch, state_for(bs)),
                               F.cross_entropy(out.logits + COUNTS.float().log(), batch["y"]))
    la0 = create_method("la-loss", {"tau": 0.0})
    torch.testing.assert_close(la0.loss(out, batch, state_for(la0)), F.cross_entropy(out.logits + math.log(1 + 1e-12),
                                                                                     batch["y"]))


def test_posthoc_adjustment_moves_the_argmax_towards_the_tail_as_the_formula_says():
    data = state_for(create_method("ce")).data
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]])  # the head class wins before adjustment
    adjusted = create_method("posthoc-la").test_logits(logits, data)
    prior = COUNTS.double() / COUNTS.sum()
    torch.testing.assert_close(adjusted, logits - torch.log(prior + 1e-12).float())
    assert logits.argmax() == 0 and adjusted.argmax() == 3  # 2 - log(500/625) < 0 - log(5/625)
    assert torch.equal(create_method("posthoc-la", {"tau": 0}).test_logits(logits, data), logits - log_prior(COUNTS, 0))


def test_mixup_with_alpha_0_is_the_identity_and_otherwise_mixes_pairs():
    x, y = torch.randn(6, 3, 4, 4), torch.arange(6)
    plain = create_method("mixup", {"alpha": 0})
    batch = plain.transform_batch({"x": x, "y": y}, state_for(plain))
    assert torch.equal(batch["x"], x) and batch["lam"] == 1.0 and torch.equal(batch["y"], y)
    out = SimpleNamespace(logits=torch.randn(6, 4))
    torch.testing.assert_close(plain.loss(out, {**batch, "y": y % 4, "y_b": batch["y_b"] % 4}, None),
                               F.cross_entropy(out.logits, y % 4))
    mixup = create_method("mixup", {"alpha": 1.0})
    np.random.seed(3), torch.manual_seed(3)
    mixed = mixup.transform_batch({"x": x, "y": y}, state_for(mixup))
    np.random.seed(3), torch.manual_seed(3)
    lam, perm = float(np.random.beta(1.0, 1.0)), torch.randperm(6)
    assert mixed["lam"] == lam and torch.equal(mixed["y_b"], y[perm]) and torch.equal(mixed["y"], y)
    torch.testing.assert_close(mixed["x"], lam * x + (1 - lam) * x[perm])


def mislas_adjust_learning_rate(epoch: int, lr: float, warmup: int = 5, decays: tuple = (160, 180)) -> float:
    """dvlab-research/MiSLAS train_stage1.py:433-451 (commit 0fc381e), cos False, re-typed: called once at the
    start of every epoch with the epoch index from 0 (:233-237); ``warmup`` and ``decays`` are its hard-coded
    5, 160 and 180 (parameters here so the cpu recipe's lengths can be checked in the same shape)."""
    epoch = epoch + 1
    if epoch <= warmup:
        return lr * epoch / warmup
    if epoch > decays[1]:
        return lr * 0.01
    if epoch > decays[0]:
        return lr * 0.1
    return lr


def test_mixup_stage_1_runs_mislas_own_schedule():
    """MiSLAS' stage 1, not BagofTricks-LT's: plain SGD, warm-up lr * (e + 1) / 5, x0.1 after 160 and again after
    180 (#28 item 6); mislas and mixup keep one shared stage 1."""
    optim = create_method("mixup").stages(get_recipe("paper"))[0].optim
    # config/cifar10/cifar10_imb001_stage1_mixup.yaml:39-43 and train_stage1.py:227-231 (no nesterov)
    assert (optim.epochs, optim.lr, optim.batch_size, optim.weight_decay, optim.momentum, optim.nesterov) == \
        (200, 0.1, 128, 2e-4, 0.9, False)
    expected = [mislas_adjust_learning_rate(e, 0.1) for e in range(200)]
    assert [optim.lr_at(e) for e in range(200)] == pytest.approx(expected, rel=1e-12, abs=0)
    assert [optim.lr_at(e) for e in (0, 4, 159, 160, 179, 180)] == pytest.approx([0.02, 0.1, 0.1, 0.01, 0.01, 0.001])
    cpu = create_method("mixup").stages(get_recipe("cpu"))[0].optim  # the cpu recipe's lengths, MiSLAS' shape
    assert not cpu.nesterov and cpu.epochs == 30
    assert [cpu.lr_at(e) for e in range(30)] == pytest.approx(
        [mislas_adjust_learning_rate(e, 0.1, warmup=2, decays=(24, 28)) for e in range(30)], rel=1e-12, abs=0)
    tiny = create_method("mixup").stages(get_recipe("tiny"))[0].optim
    assert [tiny.lr_at(e) for e in range(30)] == pytest.approx(
        [mislas_adjust_learning_rate(e, 0.025, warmup=2, decays=(24, 28)) for e in range(30)], rel=1e-12, abs=0)
    assert create_method("mislas").stages(get_recipe("paper"))[0] == create_method("mixup").stages(get_recipe("paper"))[0]
    assert create_method("mixup").stages(get_recipe("paper"))[0].optim != get_recipe("paper").stage1  # its own key
    assert create_method("mixup").stages(get_recipe("imagenet"))[0].optim == get_recipe("imagenet").stage1


def test_mislas_trains_stage_1_with_mixups_hooks_and_stage_2_with_label_aware_smoothing():
    mislas = create_method("mislas")
    stage1, stage2 = mislas.stages(get_recipe("paper"))
    assert stage1 == create_method("mixup").stages(get_recipe("paper"))[0] and not stage1.core_trained
    assert stage2 == create_method("las").stages(get_recipe("paper"))[1]
    assert mislas.stage_hooks(0).name == "mixup" and mislas.stage_hooks(1) is mislas
    from ltbench.engine.plan import stage_code
    from ltbench.fingerprint import method_code
    codes = stage_code(mislas, [stage1, stage2])
    assert codes[0] == stage_code(create_method("mixup"), [stage1])[0] != codes[1]  # mixup's code: mixup's key
    assert method_code(mislas) in codes[1]


def test_model_head_follows_the_extras_roles_not_their_names():
    model = build_model("resnet20", 3, 3)
    features = torch.randn(2, model.backbone.num_features)
    plain = model.head(features)
    model.extras["anything"] = LogitScales(3)  # role "logits": any name
    with torch.no_grad():
        model.extras["anything"].scales.copy_(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(model.head(features), plain * torch.tensor([1.0, 2.0, 3.0]))
    model.extras["training-only"] = nn.Linear(3, 3)  # no role: never part of inference
    torch.testing.assert_close(model.head(features), plain * torch.tensor([1.0, 2.0, 3.0]))
    stage = Stage("s", trainable="scales")
    assert Method().trainable_parameters(model, stage) == [model.extras["anything"].scales]


def test_a_test_logit_transform_on_the_shared_stage_and_a_bad_sampler_are_refused(tmp_path):
    plugin = tmp_path / "plugins" / "bad.py"
    plugin.parent.mkdir()
    plugin.write_text('''
from ltbench import Method, register_method


@register_method("adjust-shared")
class AdjustShared(Method):
    def stages(self, recipe):
        return [recipe.representation()]

    def test_logits(self, logits, data):
        return logits


@register_method("bad-sampler")
class BadSampler(Method):
    def stages(self, recipe):
        return [recipe.representation(loss="bad-sampler")]

    def sampler(self, state):
        return "balanced"
''')
    result = invoke("run", "--method", "adjust-shared", "--plugins", plugin.parent, *FAST, "--out", tmp_path / "a")
    assert result.exit_code != 0 and "that is the shared CE stage" in result.output
    assert not (tmp_path / "a").exists()
    result = invoke("run", "--method", "bad-sampler", "--plugins", plugin.parent, *FAST, "--out", tmp_path / "b")
    assert result.exit_code != 0 and "chose sampler 'balanced'" in result.output


def test_methods_listing_groups_by_family_with_references():
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    for name in NEW:
        assert name in result.output
    for family in ("re-weighting", "margin", "logit adjustment", "decoupling", "augmentation", "DaSL"):
        assert family in result.output
    assert "kaidic/LDAM-DRW" in result.output
    families = [cells[1] for cells in table_rows(result.output)]  # in listing order
    listed = [family for i, family in enumerate(families) if family not in families[:i]]
    listed = [family for family in listed if family != "other"]  # plugins of other tests, if loaded, come last
    assert listed == ["baseline", "re-weighting", "re-sampling", "margin", "logit adjustment", "decoupling",
                      "augmentation", "DaSL"]


SMOKE_OPTIONS = {"drw": ["-o", "defer=0.5"], "drs": ["-o", "defer=0.5"], "ldam-drw": ["-o", "defer=0.5"],
                 "cb": ["-o", "loss=focal"]}


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize("method", NEW)
def test_smoke_run(smoke_out, method):
    """Two epochs on digits-lt (DRW's weights and DRS' sampler switch after the first)."""
    result = invoke("run", "--method", method, *SMOKE_OPTIONS.get(method, []), *FAST, "--epochs", "2",
                    "--out", smoke_out, "--run-name", method)
    assert result.exit_code == 0, result.output
    metrics = json.loads((smoke_out / "runs" / method / "metrics.json").read_text())
    assert metrics["status"] == "complete" and math.isfinite(metrics["acc"])
    if method == "posthoc-la":  # the shared CE stage, untouched: a CE run reuses it, its logits are unadjusted
        ce = invoke("run", "--method", "ce", *FAST, "--epochs", "2", "--out", smoke_out, "--run-name", "ce")
        assert ce.exit_code == 0, ce.output
        ce_stage = json.loads((smoke_out / "runs" / "ce" / "metrics.json").read_text())["stages"][0]
        assert ce_stage["reused"] and ce_stage["key"] == metrics["stages"][0]["key"]
        logits = {name: np.load(smoke_out / "runs" / name / "test_logits.npz")["logits"] for name in ("ce", method)}
        prior = np.asarray(json.loads((smoke_out / "runs" / "ce" / "config.json").read_text())["class_counts"], float)
        expected = logits["ce"] - np.log(prior / prior.sum() + 1e-12)
        np.testing.assert_allclose(logits[method], expected, rtol=1e-5, atol=1e-5)


def test_no_built_in_method_branches_on_a_stage_or_loss_name():
    """What a stage does comes from the hooks that train it (``stage_hooks``: DaSL's parts, MiSLAS' mixup
    stage), never from comparing ``stage.name`` or ``stage.loss`` with a string."""
    import ast
    from pathlib import Path

    import ltbench.methods

    branches = []
    for path in sorted(Path(ltbench.methods.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr in ("name", "loss") and "stage" in ast.unparse(s.value)
                       for s in sides):
                    branches.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not branches, "\n".join(branches)
