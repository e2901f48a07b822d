"""The baselines' defining math and defaults, as their reference implementations have them
(docs/protocol.md, "Decoupling baselines"; each method file cites the reference file and line)."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import timm
import torch
from torch.nn import functional as F

import ltbench.models  # noqa: F401  (registers the CIFAR ResNets with timm)
from ltbench.config import get_recipe
from ltbench.method import create_method
from ltbench.methods.las import label_aware_epsilon
from tests.helpers import FAST, invoke


def test_resnet32_is_option_a_with_the_references_parameter_count():
    model = timm.create_model("resnet32", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 464154  # LDAM-DRW / BagofTricks-LT resnet_cifar.py
    shortcuts = [m.shortcut for m in model.modules() if hasattr(m, "shortcut")]
    assert all(not list(s.parameters()) for s in shortcuts)
    x = torch.randn(2, 16, 8, 8)
    down = model.layer2[0].shortcut(x)  # subsample by 2, zero-pad 8 channels on each side
    assert down.shape == (2, 32, 4, 4) and torch.equal(down[:, 8:24], x[:, :, ::2, ::2])
    assert not down[:, :8].any() and not down[:, 24:].any()


def test_ncm_is_centred_l2_features_and_minus_squared_distance():
    torch.manual_seed(0)
    features = torch.randn(60, 8) + 3.0
    labels = torch.arange(60) % 3
    model = SimpleNamespace(extras={})
    state = SimpleNamespace(evaluate=lambda split, features_only=True: (features, labels), model=model,
                            data=SimpleNamespace(num_classes=3))
    assert create_method("ncm").post_stage(state) == {"scale": 1.0}
    head = model.extras["head"]
    normed = F.normalize(features - features.mean(0), dim=1)
    centroids = torch.stack([normed[labels == c].mean(0) for c in range(3)])  # not re-normalised
    query = torch.randn(5, 8)
    expected = -((F.normalize(query - features.mean(0), dim=1)[:, None] - centroids[None]) ** 2).sum(-1)
    torch.testing.assert_close(head(query), expected)


def test_label_aware_smoothing_follows_mislas_concave_rule():
    counts = torch.tensor([5000, 500, 50])
    eps = label_aware_epsilon(counts, 0.3, 0.0)
    assert eps[0] == pytest.approx(0.3) and eps[2] == pytest.approx(0.0)
    assert eps[1] == pytest.approx(0.3 * math.sin((500 - 50) * math.pi / (2 * (5000 - 50))))
    linear = label_aware_epsilon(counts, 0.3, 0.0, "linear")
    assert linear[1] == pytest.approx(0.3 * 450 / 4950) and eps[1] > linear[1]  # concave lies above


def test_default_stages_match_the_references():
    recipe = get_recipe("paper")
    assert recipe.stage1.nesterov and recipe.stage1.warmup_epochs == 5  # BagofTricks-LT utils.py:56-61
    assert [s.name for s in create_method("label-smoothing").stages(recipe)] == ["representation"]
    assert create_method("label-smoothing").stages(recipe)[0].opts == {"label_smoothing": 0.1}
    assert create_method("crt").stages(recipe)[1].bn == "train"
    assert create_method("crt", {"bn": "frozen"}).stages(recipe)[1].bn == "frozen"
    assert create_method("lws").stages(get_recipe("imagenet"))[1].epochs == 5  # cls_lws.yaml:34
    las = create_method("las").stages(recipe)[1]
    assert not las.reinit_classifier and las.optim.schedule == "cosine" and las.epochs == 10 and las.bn == "frozen"


def bn_buffers(path) -> dict:
    state = torch.load(path, weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.") and "running_mean" in k}


def test_stage2_bn_train_re_estimates_the_statistics_and_frozen_keeps_them(tmp_path):
    for name, options in (("train", []), ("frozen", ["-o", "bn=frozen"])):
        result = invoke("run", "--method", "crt", *options, *FAST, "--results", tmp_path, "--run-name", name)
        assert result.exit_code == 0, result.output
    stage1 = json.loads((tmp_path / "runs" / "train" / "metrics.json").read_text())["stages"][0]["key"]
    before = bn_buffers(tmp_path / "stages" / stage1 / "model.pt")
    trained, frozen = (bn_buffers(tmp_path / "runs" / name / "model.pt") for name in ("train", "frozen"))
    assert all(torch.equal(before[k], frozen[k]) for k in before)
    assert all(not torch.equal(before[k], trained[k]) for k in before)


def test_tuning_without_a_validation_split_is_refused_before_training(tmp_path):
    result = invoke("run", "--method", "tau-norm", *FAST, "--val-per-class", "0", "--results", tmp_path)
    assert result.exit_code != 0 and "no validation split apart from its test set" in result.output
    assert not (tmp_path / "runs").exists()
    fixed = invoke("run", "--method", "tau-norm", "-o", "tau=1.0", *FAST, "--val-per-class", "0", "--results", tmp_path)
    assert fixed.exit_code == 0, fixed.output
