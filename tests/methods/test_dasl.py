"""DaSL (methods/dasl.py): gradient paths, stop-gradients, stage-2 targets, class-mode targets, the
auxiliary network on several timm backbones, and every switch value end to end through the CLI."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ltbench.config import get_recipe
from ltbench.data import build_data
from ltbench.engine.loop import evaluate
from ltbench.engine.trainer import build_stage_model
from ltbench.errors import ConfigError
from ltbench.method import DataInfo, StageState, create_method
from ltbench.methods.dasl import AUX, TEACHER, distill_kl, mixed_target, soft_cross_entropy
from ltbench.models.heads import Outputs
from tests.helpers import FAST, invoke, read_run, write_fault_plugin

SHORT = [*FAST, "--epochs", "1", "--stage2-epochs", "1"]
NUM_CLASSES = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs are per-op-overhead bound: one thread is faster, and immune to OpenMP spin-waiting when
    other processes share the 2 cores (measured: 2 threads on a loaded machine were ~700x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(options=None, backbone="resnet32", num_classes=NUM_CLASSES, in_chans=3):
    """Model + DaSL set up as a run sets them up (``build_stage_model``, seed 0), and DaSL's stages by name
    (smoke recipe)."""
    method = create_method("dasl", options or {})
    info = DataInfo(num_classes, torch.full((num_classes,), 10), torch.zeros(num_classes, dtype=torch.long),
                    torch.device("cpu"))
    model = build_stage_model(method, backbone, in_chans, info, seed=0)
    return model, method, info, {s.name: s for s in method.stages(get_recipe("smoke"))}


def part(method, stage):
    """The hooks that train ``stage`` (DaSL.stage_hooks), found by the stage's position."""
    return method.stage_hooks([s.name for s in method.stages(get_recipe("smoke"))].index(stage.name))


def stage_state(stage, model, info, progress=1.0):
    """A StageState whose ``progress`` is the given fraction (past the ramp by default)."""
    state = StageState(stage, 0, info, model, epochs=1, steps_per_epoch=100)
    state.step = int(progress * 100)
    return state


def batch(n=8, size=16, num_classes=NUM_CLASSES, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 3, size, size, generator=gen), "y": torch.arange(n) % num_classes}


def stage1_terms(model, method, info, stage, data, progress=1.0):
    model.train()
    out = model(data["x"], part(method, stage).feature_maps(stage))
    return part(method, stage).stage1_terms(out, data, stage_state(stage, model, info, progress))


def grads(module):
    return [p.grad for p in module.parameters()]


def value(tensor) -> float:
    return float(tensor.detach())


def nonzero(grad):
    return grad is not None and bool(grad.abs().sum() > 0)


# gradient paths ------------------------------------------------------------------------------------
def test_auxiliary_ce_trains_the_shared_backbone():
    model, method, info, stages = build()
    stage = stages["representation"]
    params = part(method, stage).trainable_parameters(model, stage)
    optimizer = torch.optim.SGD(params, lr=0.1)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    stage1_terms(model, method, info, stage, batch())["ce_aux"].backward()
    assert nonzero(model.backbone.layer1[0].conv1.weight.grad)  # reaches the first stage through the maps
    assert model.classifier.weight.grad is None  # the main head is not on the auxiliary path
    optimizer.step()
    after = model.backbone.state_dict()
    assert not torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])
    assert not torch.equal(before["layer3.4.conv2.weight"], after["layer3.4.conv2.weight"])
    assert torch.equal(before["fc.weight"], after["fc.weight"])


def test_kl_term_is_stop_gradient_on_the_auxiliary_network():
    model, method, info, stages = build()
    terms = stage1_terms(model, method, info, stages["representation"], batch())
    assert value(terms["soft"]) > 0
    terms["soft"].backward()
    assert all(not nonzero(g) for g in grads(model.extras[AUX]))
    assert nonzero(model.classifier.weight.grad) and nonzero(model.backbone.layer1[0].conv1.weight.grad)


def test_feature_term_moves_main_features_and_adapter_not_the_auxiliary_trunk():
    model, method, info, stages = build()
    terms = stage1_terms(model, method, info, stages["representation"], batch())
    terms["feature"].backward()
    aux = model.extras[AUX]
    assert nonzero(aux.adapter.weight.grad)  # phi learns (RECONSTRUCTED: see stage1_terms)
    assert all(not nonzero(g) for g in grads(aux.block) + grads(aux.fuse) + grads(aux.lateral))
    assert nonzero(model.backbone.layer3[-1].conv2.weight.grad)


def test_main_to_aux_reverses_the_teacher():
    model, method, info, stages = build({"distill_direction": "main_to_aux"})
    terms = stage1_terms(model, method, info, stages["representation"], batch())
    (terms["soft"] + terms["feature"]).backward()
    aux = model.extras[AUX]
    assert nonzero(aux.classifier.weight.grad) and nonzero(aux.block.body[0][0].weight.grad)
    assert model.classifier.weight.grad is None  # the main network is the stop-gradient teacher


def test_soft_weight_ramps_from_zero():
    model, method, info, stages = build({"ramp": 0.5})
    stage, data = stages["representation"], batch()
    at = {p: value(stage1_terms(model, method, info, stage, data, p)["soft"]) for p in (0.0, 0.25, 0.5)}
    assert at[0.0] == 0.0
    assert at[0.25] == pytest.approx(at[0.5] / 2, rel=1e-3)  # BN batch statistics: same batch, same outputs


def test_feature_distill_off_and_lambda_soft_zero():
    model, method, info, stages = build({"feature_distill": "off", "lambda_soft": 0})
    terms = stage1_terms(model, method, info, stages["representation"], batch())
    assert "feature" not in terms and value(terms["soft"]) == 0.0
    adapter = {id(p) for p in model.extras[AUX].adapter.parameters()}
    trained = part(method, stages["representation"]).trainable_parameters(model, stages["representation"])
    assert not adapter & {id(p) for p in trained}


# stage 2 ---------------------------------------------------------------------------------------------
def test_mixed_target_hand_made():
    labels = torch.tensor([0, 2])
    soft = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    expected = torch.tensor([[0.75 * 1 + 0.25 * 0.5, 0.25 * 0.3, 0.25 * 0.2],
                             [0.25 * 0.1, 0.25 * 0.1, 0.75 * 1 + 0.25 * 0.8]])
    assert torch.allclose(mixed_target(labels, soft, 0.25), expected)
    assert torch.equal(mixed_target(labels, soft, 0.0), F.one_hot(labels, 3).float())
    assert torch.equal(mixed_target(labels, soft, 1.0), soft)


def test_classifier_stage_trains_on_the_mixed_target_of_the_frozen_aux():
    model, method, info, stages = build({"beta": 0.3, "temperature": 3.0})
    stage, data = stages["classifier"], batch()
    model.eval()
    with torch.no_grad():
        features, maps = model.encode(data["x"], part(method, stage).feature_maps(stage))
        p_aux = F.softmax(model.extras[AUX](maps)[0] / 3.0, dim=1)
    aux_before = {k: v.clone() for k, v in model.extras[AUX].state_dict().items()}
    out = Outputs(model.head(features), features, maps)
    loss = part(method, stage).loss(out, data, stage_state(stage, model, info))
    expected = soft_cross_entropy(out.logits, 0.7 * F.one_hot(data["y"], NUM_CLASSES) + 0.3 * p_aux)
    assert value(loss) == pytest.approx(value(expected), rel=1e-6)
    for k, v in model.extras[AUX].state_dict().items():  # BN buffers of the frozen aux net stay put
        assert torch.equal(v, aux_before[k]), k


# soft_labels=class -----------------------------------------------------------------------------------
class FixedAux(nn.Module):
    """Stands in for the auxiliary network: returns known logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.adapter = nn.Linear(4, 4)

    def forward(self, maps):
        return self.logits, torch.zeros(len(self.logits), 4)


def test_class_targets_come_from_the_previous_epochs_correct_aux_predictions():
    model, method, info, stages = build({"soft_labels": "class", "feature_distill": "off", "temperature": 2.0})
    stage = stages["representation"]
    data = {"x": torch.randn(5, 3, 16, 16), "y": torch.tensor([0, 0, 1, 2, 0])}
    logits = torch.tensor([[3.0, 1.0, 0.0, 0.0],   # class 0, correct
                           [0.0, 2.0, 0.0, 0.0],   # class 0, wrong: ignored
                           [0.0, 4.0, 1.0, 0.0],   # class 1, correct
                           [5.0, 0.0, 1.0, 0.0],   # class 2, wrong: class 2 keeps its target
                           [1.0, 0.0, 0.0, 0.5]])  # class 0, correct
    model.extras[AUX] = FixedAux(logits)
    state = stage_state(stage, model, info)
    part(method, stage).on_epoch_start(state)
    model.train()
    out = model(data["x"], part(method, stage).feature_maps(stage))
    first = part(method, stage).stage1_terms(out, data, state)["soft"]
    # first epoch: one-hot fallback, so the KL term is T^2 CE(z_m / T, y)
    assert value(first) == pytest.approx(value(4 * F.cross_entropy(out.logits / 2, data["y"])), rel=1e-5)
    part(method, stage).on_epoch_end(state)
    soft = F.softmax(logits / 2, dim=1)
    expected = torch.eye(NUM_CLASSES)
    expected[0] = (soft[0] + soft[4]) / 2
    expected[1] = soft[2]
    assert torch.allclose(method.class_targets, expected)
    second = part(method, stage).stage1_terms(out, data, state)["soft"]
    assert value(second) == pytest.approx(value(distill_kl(out.logits, expected[data["y"]], 2.0)), rel=1e-5)
    saved = method.state_dict()  # the targets are method state: saved with stage artifacts
    fresh = build({"soft_labels": "class", "feature_distill": "off"})[1]
    fresh.load_state_dict(saved)
    assert torch.allclose(fresh.class_targets, expected)


# the auxiliary network on timm backbones -------------------------------------------------------------
@pytest.mark.parametrize("backbone, inputs", [("resnet32", 3), ("resnet18", 3), ("resnext26ts", 3)])
def test_aux_network_builds_on_timm_backbones(backbone, inputs):
    for aux_inputs, count in (("multi", inputs), ("last", 1)):
        model, method, info, stages = build({"aux_inputs": aux_inputs}, backbone=backbone, num_classes=5)
        aux = model.extras[AUX]
        assert len(aux.lateral) == count
        channels = [model.backbone.feature_info[i]["num_chs"] for i in method.indices]
        assert [lateral[0].in_channels for lateral in aux.lateral] == channels
        assert method.indices[-1] == len(model.backbone.feature_info) - 1
        model.train()
        out = model(torch.randn(2, 3, 32, 32), part(method, stages["representation"]).feature_maps(stages["representation"]))
        z_a, h_aux = aux(out.feature_maps)
        assert z_a.shape == (2, 5) and h_aux.shape == (2, min(model.backbone.num_features, 256))
        assert aux.adapter(h_aux).shape == out.features.shape


def test_invalid_combinations_are_one_line_errors():
    with pytest.raises(ConfigError, match="aux_to_main"):
        create_method("dasl", {"soft_labels": "class", "distill_direction": "main_to_aux"})
    with pytest.raises(ConfigError, match="use_in=stage2"):
        create_method("dasl", {"soft_labels": "static", "use_in": "stage2"})
    with pytest.raises(ConfigError, match="beta"):
        create_method("dasl", {"beta": 1.5})


# end to end through the CLI --------------------------------------------------------------------------
RUNS = {  # every switch value at least once (non-default values grouped where they combine)
    "dasl": {},
    "last-main-to-aux": {"aux_inputs": "last", "distill_direction": "main_to_aux", "feature_distill": "off",
                         "aux_stage2": "frozen", "beta": "1"},
    "static-stage1": {"soft_labels": "static", "use_in": "stage1"},
    "class-stage2": {"soft_labels": "class", "use_in": "stage2", "lambda_soft": "0", "beta": "0"},
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dasl-results")
    result = invoke("run", "--method", "ce", *SHORT, "--results", out, "--run-name", "ce")
    assert result.exit_code == 0, result.output
    for name, options in RUNS.items():
        opts = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
        result = invoke("run", "--method", "dasl", *opts, *SHORT, "--results", out, "--run-name", name)
        assert result.exit_code == 0, result.output
    return out


def declared_stages(options: dict) -> list[dict]:
    """DaSL's own stages() for these options, as config.json records them (spec without the schedule)."""
    stages = create_method("dasl", options).stages(get_recipe("smoke"))
    return json.loads(json.dumps([{k: v for k, v in s.spec().items() if k != "optim"} for s in stages]))


@pytest.mark.parametrize("name", list(RUNS))
def test_every_switch_value_runs_end_to_end(cli_runs, name):
    """The switches took effect: the run trained exactly the stages DaSL declares for its options, its stage
    keys are the default run's exactly where those stages (and all before them) are the default's, and the
    switch shows in the saved model; the final numbers are finite."""
    config = read_run(cli_runs, name, "config.json")
    metrics = read_run(cli_runs, name, "metrics.json")
    expected = create_method("dasl", RUNS[name]).options
    assert config["method_options"] == json.loads(json.dumps(expected))

    declared, default = declared_stages(RUNS[name]), declared_stages({})
    ran = [{k: v for k, v in s.items() if k not in ("key", "optim")} for s in config["stages"]]
    assert ran == declared
    assert [s["name"] for s in metrics["stages"]] == [s["name"] for s in declared]
    assert (declared == default) == (name == "dasl")  # every non-default switch changes some stage

    keys = [s["key"] for s in metrics["stages"]]
    assert keys == [s["key"] for s in config["stages"]] and len(set(keys)) == len(keys)
    default_keys = [s["key"] for s in read_run(cli_runs, "dasl", "metrics.json")["stages"]]
    for i, key in enumerate(keys):  # a key chains the previous one: equal iff the whole prefix is equal
        if declared[:i + 1] == default[:i + 1]:
            assert key == default_keys[i], (i, declared[i]["name"])
        else:
            assert key not in default_keys, (i, declared[i]["name"])
    if declared[0] != default[0]:  # the switch changes stage 1: its own stage-1 artifact
        assert keys[0] != default_keys[0]
        assert (cli_runs / "stages" / keys[0] / "model.pt").is_file()

    saved = torch.load(cli_runs / "runs" / name / "model.pt", weights_only=True)
    laterals = {k.split(".")[3] for k in saved["model"] if k.startswith(f"extras.{AUX}.lateral.")}
    assert len(laterals) == (1 if expected["aux_inputs"] == "last" else 3)  # ResNet-32: its 3 stage maps
    assert ("class_targets" in saved["method"]) == (expected["soft_labels"] == "class")
    assert not any(k.startswith(f"extras.{TEACHER}.") for k in saved["model"])  # the static teacher is dropped

    compactness = metrics["stages"][0]["metrics"]["feature_compactness"]  # stage-1 claim
    assert isinstance(compactness, float) and math.isfinite(compactness)
    for key in ("acc", "balanced_acc", "ece", "nll", "wrong_confidence", "many_acc", "medium_acc", "few_acc"):
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (key, metrics[key])
    assert 0 <= metrics["acc"] <= 100 and 0 <= metrics["ece"] <= 100


def test_stage_keys_are_shared_where_stage1_is(cli_runs):
    keys = {name: [s["key"] for s in read_run(cli_runs, name, "metrics.json")["stages"]] for name in ["ce", *RUNS]}
    assert keys["class-stage2"][0] == keys["ce"][0]  # use_in=stage2: CE's own stage-1 artifact
    static = read_run(cli_runs, "static-stage1", "metrics.json")["stages"]
    assert static[0]["key"] == keys["dasl"][0] and static[0]["reused"]  # the teacher = default DaSL stage 1
    assert [s["name"] for s in static] == ["representation", "static-representation", "classifier"]


def test_class_targets_are_saved_with_stage_artifacts(cli_runs):
    stages = read_run(cli_runs, "class-stage2", "metrics.json")["stages"]
    assert [s["name"] for s in stages] == ["representation", "aux-network", "aux-classifier", "classifier"]
    saved = torch.load(cli_runs / "stages" / stages[2]["key"] / "model.pt", weights_only=True)["method"]
    targets = saved["class_targets"]
    assert targets.shape == (10, 10) and torch.allclose(targets.sum(1), torch.ones(10))
    assert not torch.equal(targets, torch.eye(10))  # updated from correct auxiliary predictions


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_stage2_leaves_backbone_and_aux_trunk_bit_identical(cli_runs):
    stages = read_run(cli_runs, "dasl", "metrics.json")["stages"]
    stage1 = _state(cli_runs / "stages" / stages[0]["key"] / "model.pt")
    final = _state(cli_runs / "runs" / "dasl" / "model.pt")
    frozen = [k for k in stage1 if (k.startswith("backbone.") and not k.startswith("backbone.fc."))
              or (k.startswith(f"extras.{AUX}.") and ".classifier." not in k)]
    assert any("running_mean" in k for k in frozen) and any(k.startswith("extras.") for k in frozen)
    for k in frozen:  # stage2_bn="train": only the backbone's BN statistics follow the balanced batches
        moving = k.startswith("backbone.") and k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(stage1[k], final[k]) != moving, k
    assert not torch.equal(stage1["backbone.fc.weight"], final["backbone.fc.weight"])  # re-trained
    head = f"extras.{AUX}.classifier.weight"
    assert not torch.equal(stage1[head], final[head])  # aux_stage2=retrain


def test_removing_the_aux_network_leaves_test_logits_unchanged(cli_runs):
    """The run's saved test logits are reproduced by the main network alone, auxiliary network deleted."""
    model, method, info, _ = build(num_classes=10, in_chans=1)
    state = _state(cli_runs / "runs" / "dasl" / "model.pt")
    assert any(k.startswith(f"extras.{AUX}.") for k in state)
    model.load_state_dict(state)
    del model.extras[AUX]
    data = build_data("digits-lt", None, None)
    logits, labels, _ = evaluate(model, data.loader("test", torch.device("cpu")), 1024, "fp32", torch.device("cpu"))
    saved = np.load(cli_runs / "runs" / "dasl" / "test_logits.npz")
    assert np.array_equal(saved["labels"], labels.numpy())
    assert np.allclose(saved["logits"], logits.numpy(), atol=1e-5)


# interrupted and resumed runs reproduce uninterrupted ones (class-mode state, the static teacher) --------
@pytest.mark.parametrize("options, fault", [
    ({"soft_labels": "class"}, "term:0:1:5"),  # stage 1, epoch 2: last epoch's targets + this epoch's partial sums
    ({"soft_labels": "static"}, "term:1:1:3"),  # stage B, epoch 2: the frozen teacher must come back with the run
    # the shared CE stage 1, so setup runs only before the auxiliary network's stage: again on resuming there
    ({"use_in": "stage2", "soft_labels": "class"}, "term:1:0:3"),
])
def test_interrupted_run_resumes_bit_exactly(tmp_path, options, fault):
    plugins = tmp_path / "plugins"
    write_fault_plugin(plugins / "fault.py", "dasl-fault", "dasl", env="DASL_TEST_FAULT", unshared=False)
    opts = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    args = ["--method", "dasl-fault", "--plugins", plugins, *opts, *SHORT, "--epochs", "2"]
    reference = invoke("run", *args, "--results", tmp_path / "ref", "--run-name", "r")
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "stopped"
    env = {**os.environ, "DASL_TEST_FAULT": fault, "OMP_NUM_THREADS": "1"}  # the same threads as in-process
    # timeout: a hang guard, not a timing (a loaded 2-core machine took over 120 s here)
    stopped = subprocess.run([sys.executable, "-m", "ltbench", "run", *map(str, args), "--results", str(out),
                              "--run-name", "r"], env=env, capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0 and not (out / "runs" / "r" / "metrics.json").exists(), stopped.stderr
    resumed = invoke("run", "--results", out, "--run-name", "r", "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    a, b = read_run(tmp_path / "ref", "r", "metrics.json"), read_run(out, "r", "metrics.json")
    assert b["resumed_from"]["stage"] == int(fault.split(":")[1]) + 1 and b["resumed_from"]["step"] > 0
    for key in ("acc", "ece", "nll", "feature_compactness"):
        assert a[key] == b[key], key
    assert [s["metrics"]["acc"] for s in a["stages"]] == [s["metrics"]["acc"] for s in b["stages"]]
    logits = [np.load(o / "runs" / "r" / "test_logits.npz")["logits"] for o in (tmp_path / "ref", out)]
    assert np.array_equal(*logits)
