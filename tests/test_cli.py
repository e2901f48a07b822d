"""End to end through the CLI on the embedded digits-lt data (smoke recipe, fp32: seconds per run)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltbench.cli import app

BUILTIN = ["ce", "label-smoothing", "crt", "lws", "tau-norm", "ncm"]
FAST = ["--dataset", "digits-lt", "--recipe", "smoke", "--precision", "fp32", "--device", "cpu", "-q"]
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})  # no folded table cells


def metrics_of(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "metrics.json").read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every built-in method once, in one results folder (so stage 1 is shared)."""
    out = tmp_path_factory.mktemp("results")
    for method in BUILTIN:
        result = invoke("run", "--method", method, *FAST, "--out", out, "--run-name", method)
        assert result.exit_code == 0, result.output
    return out


def test_methods_lists_the_builtins():
    result = invoke("methods")
    assert result.exit_code == 0
    for method in BUILTIN + ["dasl"]:
        assert method in result.output


@pytest.mark.parametrize("method", BUILTIN)
def test_every_method_writes_its_run_files(results, method):
    run = results / "runs" / method
    for name in ("config.json", "metrics.json", "per_class.csv", "epochs.jsonl", "test_logits.npz", "subset.npz",
                 "model.pt"):
        assert (run / name).is_file(), name
    metrics = metrics_of(results, method)
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
        first = metrics_of(results, method)["stages"][0]
        assert first["key"] == ce_key
        assert first["reused"] is True and first["trained_by"] == "ce"
    smoothing = metrics_of(results, "label-smoothing")["stages"][0]
    assert smoothing["key"] != ce_key and smoothing["reused"] is False


def _backbone_state(path: Path, skip_classifier: bool = True) -> dict:
    state = torch.load(path, weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("backbone.") and not (skip_classifier and ".fc." in k)}


def test_crt_and_lws_leave_the_backbone_unchanged(results):
    key = metrics_of(results, "crt")["stages"][0]["key"]
    stage1 = _backbone_state(results / "stages" / key / "model.pt")
    for method in ("crt", "lws"):
        final = _backbone_state(results / "runs" / method / "model.pt")
        assert stage1.keys() == final.keys()
        assert all(torch.equal(stage1[k], final[k]) for k in stage1), method  # incl. BN running statistics
    crt_fc = _backbone_state(results / "runs" / "crt" / "model.pt", skip_classifier=False)["backbone.fc.weight"]
    stage1_fc = _backbone_state(results / "stages" / key / "model.pt", skip_classifier=False)["backbone.fc.weight"]
    assert not torch.equal(crt_fc, stage1_fc)  # re-initialised and re-trained
    lws = torch.load(results / "runs" / "lws" / "model.pt", weights_only=True)["model"]
    assert torch.equal(lws["backbone.fc.weight"], stage1_fc)  # LWS keeps the classifier, learns scales
    assert not torch.equal(lws["extras.logit_scales.scales"], torch.ones(10))


def test_tau_norm_picks_tau_on_validation(results):
    post = metrics_of(results, "tau-norm")["stages"][1]["post"]
    assert 0 <= post["tau"] <= 2 and len(post["val_acc_by_tau"]) == 21


def test_existing_run_name_is_refused_and_kept(results):
    before = (results / "runs" / "ce" / "metrics.json").read_bytes()
    result = invoke("run", "--method", "ce", *FAST, "--out", results, "--run-name", "ce")
    assert result.exit_code != 0 and "already exists" in result.output
    assert (results / "runs" / "ce" / "metrics.json").read_bytes() == before


def test_plugin_method_from_a_folder(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(EXAMPLES / "balanced_softmax.py", plugins)
    listed = invoke("methods", "--plugins", plugins)
    assert listed.exit_code == 0 and "balanced-softmax" in listed.output
    assert "plugins" in listed.output  # the origin column shows the file path
    out = tmp_path / "results"
    result = invoke("run", "--method", "balanced-softmax", "--plugins", plugins, "-o", "prior_power=0.5", *FAST,
                    "--out", out, "--run-name", "bs")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "runs" / "bs" / "config.json").read_text())
    assert config["method_options"] == {"prior_power": 0.5}
    assert config["stages"][0]["loss"] == "balanced-softmax"


def test_batch_size_scales_the_learning_rate(tmp_path):
    result = invoke("run", "--method", "ce", *FAST, "--batch-size", "64", "--epochs", "1", "--out", tmp_path,
                    "--run-name", "b64")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "b64" / "config.json").read_text())
    assert any("learning rate scaled linearly 0.025 -> 0.05" in n for n in config["notices"])
    assert config["stages"][0]["optim"]["lr"] == pytest.approx(0.05)


def test_default_run_is_dasl_on_digits(tmp_path):
    result = invoke("run", "--precision", "fp32", "--recipe", "smoke", "--epochs", "1", "--stage2-epochs", "1",
                    "-q", "--out", tmp_path, "--run-name", "default")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "runs" / "default" / "config.json").read_text())
    assert config["method"] == "dasl" and config["dataset"] == "digits-lt"


def test_crt_on_real_cifar10_images(cifar10_folder, tmp_path):
    """The issue's real-data check, shortened: 1 + 1 epochs of cRT on CIFAR-10-LT IF100 JPEG folders."""
    result = invoke("run", "--method", "crt", "--dataset", "cifar10-lt", "--data-root", cifar10_folder,
                    "--recipe", "cpu", "--epochs", "1", "--stage2-epochs", "1", "--batch-size", "256",
                    "--precision", "fp32", "-q", "--out", tmp_path, "--run-name", "c10")
    assert result.exit_code == 0, result.output
    metrics = metrics_of(tmp_path, "c10")
    config = json.loads((tmp_path / "runs" / "c10" / "config.json").read_text())
    assert config["data"]["train_size"] == 12406 and metrics["num_test"] == 10000
    assert metrics["group_sizes"] == {"many": 8, "medium": 2, "few": 0}
    assert metrics["acc"] > 12  # 1 + 1 epochs on real images: above chance (10 %); measured 14.95


def test_crt_on_generated_places_lt_through_the_dataloader_path(tmp_path):
    """The file-list path end to end: published-style lists + JPEGs, DataLoader workers, a timm backbone."""
    from test_sources import write_list, write_split_dataset

    lines = write_split_dataset(tmp_path / "data", ["airfield", "alley", "arch"], {"train": 6, "val": 2, "test": 2})
    lines["train"] = lines["train"][:6] + lines["train"][6:9] + lines["train"][12:13]  # 6 / 3 / 1: long-tailed
    for split in ("train", "val", "test"):
        write_list(tmp_path / "data" / "Places_LT" / f"Places_LT_{split}.txt", lines[split])
    result = invoke("run", "--method", "crt", "--dataset", "places-lt", "--data-root", tmp_path / "data",
                    "--backbone", "resnet18", "--recipe", "smoke", "--epochs", "1", "--stage2-epochs", "1",
                    "--batch-size", "4", "--precision", "fp32", "-q", "--out", tmp_path / "out", "--run-name", "p")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "runs" / "p" / "config.json").read_text())
    assert config["class_counts"][:4] == [6, 3, 1, 0] and config["backbone"] == "resnet18"
    assert metrics_of(tmp_path / "out", "p")["num_test"] == 6
