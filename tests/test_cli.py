"""End to end through the CLI on the embedded digits-lt data (smoke recipe, fp32: seconds per run)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench.config import get_recipe
from ltbench.data import get_source
from ltbench.method import create_method
from ltbench.models import build_model, tau_normalize
from tests.helpers import FAST, REPO, invoke, read_run, table_rows, write_list, write_split_dataset

BUILTIN = ["ce", "label-smoothing", "crt", "lws", "tau-norm", "ncm"]
EXAMPLES = REPO / "docs" / "examples"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every built-in method once, in one results folder (so stage 1 is shared)."""
    out = tmp_path_factory.mktemp("results")
    for method in BUILTIN:
        result = invoke("run", "--method", method, *FAST, "--results", out, "--run-name", method)
        assert result.exit_code == 0, result.output
    return out


def test_methods_lists_the_builtins():
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("\u2503"))  # "┃": header row
    assert [cell.strip() for cell in header.strip("\u2503").split("\u2503")] == ["method", "family",
                                                                                  "summary (reference implementation)",
                                                                                  "stages", "origin"]
    rows = {cells[0]: cells for cells in table_rows(result.output)}
    for method in BUILTIN + ["dasl"]:
        assert method in rows, f"no row for {method!r} in:\n{result.output}"
        assert rows[method][4] == "built-in", rows[method]
        assert rows[method][1] == create_method(method).family and "reference: " in rows[method][2], rows[method]
        # the stages column lists the method's stages (names; "[trainable, sampler]" tags stripped)
        names = [stage.name for stage in create_method(method).stages(get_recipe("paper"))]
        assert re.sub(r"\[[^\]]*\]", "", rows[method][3]).split(" -> ") == names, rows[method]


@pytest.mark.parametrize("method", BUILTIN)
def test_every_method_writes_its_run_files(results, method):
    run = results / "runs" / method
    for name in ("config.json", "metrics.json", "per_class.csv", "epochs.jsonl", "test_logits.npz", "subset.npz",
                 "model.pt"):
        assert (run / name).is_file(), name
    metrics = read_run(results, method)
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == method and config["recipe"] == "smoke" and config["precision"] == "fp32"
    assert config["versions"]["torch"] == torch.__version__
    saved = np.load(run / "test_logits.npz")
    accuracy = 100 * (saved["logits"].argmax(1) == saved["labels"]).mean()
    assert accuracy == pytest.approx(metrics["acc"], abs=1e-6)
    assert sum(metrics["group_sizes"].values()) == 10
    subset = np.load(run / "subset.npz")
    assert subset["class_counts"].tolist() == config["class_counts"]


def test_decoupled_methods_reuse_the_ce_stage1(results):
    ce_key = json.loads((results / "runs" / "ce" / "config.json").read_text())["stages"][0]["key"]
    for method in ("crt", "lws", "tau-norm", "ncm"):
        first = read_run(results, method)["stages"][0]
        assert first["key"] == ce_key
        assert first["reused"] is True and first["trained_by"] == "ce"
    smoothing = read_run(results, "label-smoothing")["stages"][0]
    assert smoothing["key"] != ce_key and smoothing["reused"] is False


def _backbone_state(path: Path, skip_classifier: bool = True) -> dict:
    state = torch.load(path, weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.") and not (skip_classifier and ".fc." in k)}


BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def test_crt_and_lws_keep_the_backbone_weights_and_re_estimate_bn(results):
    key = read_run(results, "crt")["stages"][0]["key"]
    stage1 = _backbone_state(results / "stages" / key / "model.pt")
    statistics = [k for k in stage1 if k.endswith(BN_STATISTICS)]
    assert statistics
    for method in ("crt", "lws"):
        final = _backbone_state(results / "runs" / method / "model.pt")
        assert stage1.keys() == final.keys()
        assert all(torch.equal(stage1[k], final[k]) for k in stage1 if k not in statistics), method
        # bn="train" (the references): the frozen backbone's BN statistics follow the balanced batches
        assert all(not torch.equal(stage1[k], final[k]) for k in statistics), method
    crt_fc = _backbone_state(results / "runs" / "crt" / "model.pt", skip_classifier=False)["backbone.fc.weight"]
    stage1_fc = _backbone_state(results / "stages" / key / "model.pt", skip_classifier=False)["backbone.fc.weight"]
    assert not torch.equal(crt_fc, stage1_fc)  # re-initialised and re-trained
    lws = torch.load(results / "runs" / "lws" / "model.pt", weights_only=True)["model"]
    assert torch.equal(lws["backbone.fc.weight"], stage1_fc)  # LWS keeps the classifier, learns scales
    assert not torch.equal(lws["extras.logit_scales.scales"], torch.ones(10))


def _normalized(split, source) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(split.images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (source.mean, source.std))
    return (x - mean) / std, torch.from_numpy(split.labels.astype(np.int64))


@torch.no_grad()
def _accuracy_by_tau(model, weight, split, source, taus) -> dict:
    """Top-1 (%, rounded as tau_norm.py rounds) of the saved model on ``split`` with W / ||W||^tau."""
    x, y = _normalized(split, source)
    features, _ = model.encode(x)
    scores = {}
    for tau in taus:
        tau_normalize(model.classifier, tau, weight)
        scores[tau] = round(100 * (model.head(features).argmax(1) == y).float().mean().item(), 3)
    return scores


def test_tau_norm_picks_tau_on_validation(results):
    """tau is the argmax of the validation accuracies, and those are the saved model's accuracies on the
    run's validation split (held out of the pool, disjoint from the training images), not on the test set."""
    run = results / "runs" / "tau-norm"
    config = json.loads((run / "config.json").read_text())
    metrics = read_run(results, "tau-norm")
    post = metrics["stages"][1]["post"]
    recorded = {float(t): acc for t, acc in post["val_acc_by_tau"].items()}
    taus = sorted(recorded)
    assert taus == pytest.approx([round(0.1 * i, 6) for i in range(21)])
    best = max(recorded.values())
    assert post["tau"] == min(t for t in taus if recorded[t] == best)  # argmax, ties -> smallest tau

    subset = np.load(run / "subset.npz")
    val_idx, train_idx = subset["val_indices"], subset["train_indices"]
    assert len(val_idx) == config["data"]["val_size"] > 0
    assert not set(val_idx.tolist()) & set(train_idx.tolist())  # no validation image is a training image
    source = get_source(config["dataset"])
    pool = source.load(Path("unused")).train  # digits-lt: bundled with scikit-learn, no data root
    model = build_model(config["backbone"], source.num_classes, source.channels)
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True)["model"])
    model.eval()
    stage1 = torch.load(results / "stages" / config["stages"][0]["key"] / "model.pt", weights_only=True)["model"]
    weight = stage1["backbone.fc.weight"]
    expected = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(post["tau"])
    assert torch.allclose(model.classifier.weight, expected, atol=1e-6)  # the chosen tau is the one applied
    assert not model.classifier.bias.any()

    val = _accuracy_by_tau(model, weight, pool.subset(val_idx), source, taus)
    assert val == pytest.approx(recorded, abs=1e-3)  # recomputed on the validation split: identical
    test_split = source.load(Path("unused")).test
    test = _accuracy_by_tau(model, weight, test_split, source, taus)
    assert test[post["tau"]] == pytest.approx(metrics["acc"], abs=1e-3)
    assert test != pytest.approx(recorded, abs=1e-3)  # picked on the test set, they would be these


def test_existing_run_name_is_refused_and_kept(results):
    before = (results / "runs" / "ce" / "metrics.json").read_bytes()
    result = invoke("run", "--method", "ce", *FAST, "--results", results, "--run-name", "ce")
    assert result.exit_code != 0 and "already exists" in result.output
    assert (results / "runs" / "ce" / "metrics.json").read_bytes() == before


def test_plugin_method_from_a_folder(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(EXAMPLES / "my_balanced_softmax.py", plugins)
    listed = invoke("methods", "--plugins", plugins)
    assert listed.exit_code == 0 and "my-balanced-softmax" in listed.output
    assert "plugins" in listed.output  # the origin column shows the file path
    out = tmp_path / "results"
    result = invoke("run", "--method", "my-balanced-softmax", "--plugins", plugins, "-o", "prior_power=0.5", *FAST,
                    "--results", out, "--run-name", "bs")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "runs" / "bs" / "config.json").read_text())
    assert config["method_options"] == {"prior_power": 0.5}
    assert config["stages"][0]["loss"] == "balanced-softmax"


def test_batch_size_scales_the_learning_rate(tmp_path):
    result = invoke("run", "--method", "ce", *FAST, "--batch-size", "64", "--epochs", "1", "--results", tmp_path,
                    "--run-name", "b64")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "b64" / "config.json").read_text())
    assert any("learning rate scaled linearly 0.025 -> 0.05" in n for n in config["notices"])
    assert config["stages"][0]["optim"]["lr"] == pytest.approx(0.05)


def test_default_run_is_dasl_on_digits(tmp_path):
    result = invoke("run", "--precision", "fp32", "--recipe", "smoke", "--epochs", "1", "--stage2-epochs", "1",
                    "-q", "--results", tmp_path, "--run-name", "default")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "default" / "config.json").read_text())
    assert config["method"] == "dasl" and config["dataset"] == "digits-lt"


def test_crt_on_real_cifar10_images(cifar10_folder, tmp_path):
    """The issue's real-data check, shortened: 1 + 1 epochs of cRT on CIFAR-10-LT IF100 JPEG folders. What it
    checks is the data (the subset, the held-out split, the whole test set scored), so the backbone is timm's
    test_resnet (~10x ResNet-32's training speed on 32x32 images; 144 s of CI with ResNet-32)."""
    result = invoke("run", "--method", "crt", "--dataset", "cifar10-lt", "--data-root", cifar10_folder,
                    "--backbone", "test_resnet",
                    "--recipe", "cpu", "--epochs", "1", "--stage2-epochs", "1", "--batch-size", "256",
                    "--precision", "fp32", "-q", "--results", tmp_path, "--run-name", "c10")
    assert result.exit_code == 0, result.output
    metrics = read_run(tmp_path, "c10")
    config = json.loads((tmp_path / "runs" / "c10" / "config.json").read_text())
    assert config["data"]["train_size"] == 12386 and metrics["num_test"] == 10000  # 12,406 less 20 held-out head images
    assert config["data"]["val_size"] == 200
    assert metrics["group_sizes"] == {"many": 8, "medium": 2, "few": 0}
    # 1 + 1 epochs is too short for an accuracy check: 14.95 with one thread, 11.3 with two (CI); the real
    # test set's structure is what this checks: 1,000 images in each of the 10 classes, every one scored
    rows = (tmp_path / "runs" / "c10" / "per_class.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[2]) for r in rows] == [1000] * 10
    assert 0 <= metrics["acc"] <= 100 and sum(int(r.split(",")[3]) for r in rows) == round(metrics["acc"] * 100)


def test_crt_on_generated_places_lt_through_the_dataloader_path(tmp_path):
    """The file-list path end to end: published-style lists + JPEGs, DataLoader workers, a timm backbone."""

    lines = write_split_dataset(tmp_path / "data", ["airfield", "alley", "arch"], {"train": 6, "val": 2, "test": 2})
    lines["train"] = lines["train"][:6] + lines["train"][6:9] + lines["train"][12:13]  # 6 / 3 / 1: long-tailed
    for split in ("train", "val", "test"):
        write_list(tmp_path / "data" / "Places_LT" / f"Places_LT_{split}.txt", lines[split])
    result = invoke("run", "--method", "crt", "--dataset", "places-lt", "--data-root", tmp_path / "data",
                    "--backbone", "resnet18", "--recipe", "smoke", "--epochs", "1", "--stage2-epochs", "1",
                    "--batch-size", "4", "--precision", "fp32", "-q", "--results", tmp_path / "out", "--run-name", "p")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "runs" / "p" / "config.json").read_text())
    assert config["class_counts"][:4] == [6, 3, 1, 0] and config["backbone"] == "resnet18"
    assert read_run(tmp_path / "out", "p")["num_test"] == 6
