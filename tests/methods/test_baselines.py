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


def tau_norm_state(classifier: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
    model = SimpleNamespace(classifier=classifier, head=classifier)
    return SimpleNamespace(model=model, evaluate=lambda split, features_only=True: (features, labels),
                           log=lambda line: None)


@pytest.mark.parametrize("tau", [1.0, -1.0])
def test_tau_norm_bias_keep_leaves_the_bias_and_drop_zeroes_it(tau):
    """keep: BagofTricks-LT (lib/net/network.py:113-117 normalises classifier.weight only); drop: Kang
    (classifier-balancing tau_norm.py scores features against the normalised weights, no bias)."""
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4) * 3, torch.tensor([1.0, -2.0, 3.0])
    features, labels = torch.zeros(6, 4), torch.full((6,), 2)  # zero features: the bias alone decides
    results = {}
    for choice in ("keep", "drop"):
        classifier = torch.nn.Linear(4, 3)
        classifier.weight.data.copy_(weight)
        classifier.bias.data.copy_(bias)
        method = create_method("tau-norm", {"tau": tau, "bias": choice})
        results[choice] = method.post_stage(tau_norm_state(classifier, features, labels))
        chosen = results[choice]["tau"]
        torch.testing.assert_close(classifier.weight, weight / weight.norm(dim=1, keepdim=True) ** chosen)
        expected = bias if choice == "keep" else torch.zeros(3)
        assert torch.equal(classifier.bias, expected), choice
    if tau < 0:  # the validation choice sees the bias it will test with: class 2 wins on every tau if kept
        assert set(results["keep"]["val_acc_by_tau"].values()) == {100.0}
        assert set(results["drop"]["val_acc_by_tau"].values()) == {0.0}
    assert create_method("tau-norm").options["bias"] == "drop"  # Kang's, the default


def test_tau_norm_lists_the_bias_switch_and_refuses_other_values():
    result = invoke("methods", "tau-norm")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "drop | keep" in text and "network.py:113-117" in text.replace(" ", "")
    with pytest.raises(Exception, match="choose one of drop, keep"):
        create_method("tau-norm", {"bias": "zero"})


def test_tau_norm_bias_keep_run_keeps_stage_1s_bias(tmp_path):
    for name, options in (("keep", ["-o", "bias=keep"]), ("drop", [])):
        result = invoke("run", "--method", "tau-norm", "-o", "tau=1", *options, *FAST, "--results", tmp_path,
                        "--run-name", name)
        assert result.exit_code == 0, result.output
    stage1 = json.loads((tmp_path / "runs" / "keep" / "metrics.json").read_text())["stages"][0]["key"]
    bias = "backbone.fc.bias"  # the classifier (timm's head) as the model's state dict names it
    before = torch.load(tmp_path / "stages" / stage1 / "model.pt", weights_only=True)["model"][bias]
    kept, dropped = (torch.load(tmp_path / "runs" / name / "model.pt", weights_only=True)["model"][bias]
                     for name in ("keep", "drop"))
    assert before.abs().sum() > 0 and torch.equal(kept, before) and not dropped.any()
