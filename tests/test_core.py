"""Unit tests of the protocol rules and the math of the core (no training)."""
import bisect
import math

import numpy as np
import pytest
import torch

from ltbench.config import RECIPES, Optim, Stage, get_recipe, stable_hash
from ltbench.data.augment import random_crop_flip
from ltbench.data.base import Augment
from ltbench.data.longtail import balanced_val_split, group_sizes, lt_counts, lt_subset, shot_groups
from ltbench.data.samplers import IndexStream
from ltbench.engine.plan import stage_keys, stage_seeds
from ltbench.errors import ConfigError
from ltbench.metrics import classification_metrics, expected_calibration_error, feature_compactness
from ltbench.models import LogitScales, build_model, tau_normalize


@pytest.mark.parametrize("img_max,classes,expected", [
    (5000, 10, {100: 12406, 50: 13996, 10: 20431}),
    (500, 100, {100: 10847, 50: 12608, 10: 19573}),
])
def test_ldam_drw_train_sizes(img_max, classes, expected):
    for imbalance, size in expected.items():
        assert sum(lt_counts(img_max, classes, imbalance)) == size


def test_lt_subset_is_seeded_and_follows_counts():
    labels = np.repeat(np.arange(10), 500)
    a = lt_subset(labels, 10, 100, seed=0)
    b = lt_subset(labels, 10, 100, seed=0)
    c = lt_subset(labels, 10, 100, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(labels[a], minlength=10).tolist() == lt_counts(500, 10, 100)
    assert lt_counts(500, 10, 100)[0] == 500 and lt_counts(500, 10, 100)[-1] == 5
    assert lt_counts(100, 4, 10, "step") == [100, 100, 10, 10]
    with pytest.raises(ConfigError, match="imbalance factor must be >= 1"):
        lt_counts(100, 10, 0.5)


def test_validation_split_is_taken_first_and_never_holds_a_training_image():
    labels = np.repeat(np.arange(10), 500)
    val = balanced_val_split(labels, 10, 20)
    kept = lt_subset(labels, 10, 100, seed=0, img_max=500, exclude=val)
    assert np.bincount(labels[val], minlength=10).tolist() == [20] * 10
    assert not np.isin(val, kept).any()  # the head class too: it keeps 480, not all 500
    counts = np.bincount(labels[kept], minlength=10)
    assert counts[0] == 480 and counts[1:].tolist() == lt_counts(500, 10, 100)[1:]


def test_cifar10_lt_sizes_with_the_validation_split_held_out():
    labels = np.repeat(np.arange(10), 5000)
    for per_class, size in ((20, 12386), (0, 12406)):
        val = balanced_val_split(labels, 10, per_class)
        assert len(lt_subset(labels, 10, 100, img_max=5000, exclude=val)) == size


def test_shot_groups_boundaries():
    assert shot_groups([101, 100, 20, 19]).tolist() == [0, 1, 1, 2]
    counts = lt_counts(500, 100, 100)
    assert group_sizes(counts) == {"many": 35, "medium": 35, "few": 30}
    assert group_sizes(lt_counts(5000, 10, 100)) == {"many": 8, "medium": 2, "few": 0}  # 5000 ... 83, 50


def test_ece_hand_computed():
    # two bins used: conf 0.95 (2 samples, 1 correct) and 0.55 (2 samples, 2 correct)
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([1, 0, 1, 1])
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)


def test_classification_metrics_groups_and_wrong_confidence():
    logits = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [4.0, 0, 0], [0, 0, 4.0]])
    labels = torch.tensor([0, 1, 2, 2])
    metrics, rows = classification_metrics(logits, labels, class_counts=[500, 50, 5])
    assert metrics["acc"] == pytest.approx(75.0)
    assert metrics["many_acc"] == 100.0 and metrics["medium_acc"] == 100.0 and metrics["few_acc"] == 50.0
    assert metrics["group_sizes"] == {"many": 1, "medium": 1, "few": 1}
    p = math.exp(4) / (math.exp(4) + 2)
    assert metrics["wrong_confidence"] == pytest.approx(p, rel=1e-5)
    assert [r["train_count"] for r in rows] == [500, 50, 5]
    assert metrics["nll"] == pytest.approx((3 * -math.log(p) + -math.log(1 / (math.exp(4) + 2))) / 4, rel=1e-5)


def test_feature_compactness():
    features = torch.tensor([[0.0, 1], [0, -1], [10, 1], [10, -1]])
    labels = torch.tensor([0, 0, 1, 1])
    # intra: each point is 1 from its mean (squared 1); between means: 100
    assert feature_compactness(features, labels, 2) == pytest.approx(1 / 100)


def test_tau_norm_math():
    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 4, 0], [0, 0, 2]]))
    weight = linear.weight.clone()
    tau_normalize(linear, 1.0, weight)
    assert torch.allclose(linear.weight.norm(dim=1), torch.ones(2))
    assert torch.all(linear.bias == 0)
    tau_normalize(linear, 0.5, weight)
    assert torch.allclose(linear.weight[0], weight[0] / 5 ** 0.5)
    tau_normalize(linear, 0.0, weight)
    assert torch.equal(linear.weight, weight)


def test_lws_scales_multiply_logits():
    scales = LogitScales(3)
    with torch.no_grad():
        scales.scales.copy_(torch.tensor([1.0, 2.0, 0.5]))
    logits = torch.tensor([[1.0, 1.0, 4.0]])
    assert torch.equal(scales(logits), torch.tensor([[1.0, 2.0, 2.0]]))


def test_class_balanced_sampler_is_uniform_over_classes():
    labels = torch.from_numpy(np.repeat(np.arange(10), lt_counts(500, 10, 100)))
    stream = IndexStream(labels, 10)
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([stream.epoch("class-balanced", gen) for _ in range(10)])
    freq = torch.bincount(labels[draws], minlength=10).double() / len(draws)
    # 10 x 1,370 draws: binomial std of a frequency ~ 0.0026; allow 5 sigma
    assert torch.all((freq - 0.1).abs() < 0.013), freq
    instance = stream.epoch("instance", gen)
    assert torch.equal(torch.sort(instance).values, torch.arange(len(labels)))
    sqrt = torch.cat([stream.epoch("sqrt", gen) for _ in range(10)])
    counts = torch.tensor(lt_counts(500, 10, 100)).double()
    expected = counts.sqrt() / counts.sqrt().sum()
    freq = torch.bincount(labels[sqrt], minlength=10).double() / len(sqrt)
    assert torch.all((freq - expected).abs() < 0.015)


def test_a_class_balanced_epoch_is_as_long_as_the_references_loops_make_it():
    """#28 item 8 asked for Kang's ClassAwareSampler length (max count x classes: ClassAwareSampler.py:74, 81-82;
    1.28 M draws on ImageNet-LT), but classifier-balancing's loop never draws it: it ends every epoch after
    epoch_steps = int(len(train) / batch) steps (run_networks.py:57-63, 263-266, commit f162ade), and
    BagofTricks-LT's class-balanced data set has len(train) items (lib/dataset/cao_cifar.py:256-257, drop_last=True
    at main/train.py:210-217, commit ce7859a). So a class-balanced epoch stays len(train) draws on every recipe,
    in int(len / batch) whole batches as the references."""
    from ltbench.data.loaders import TensorLoader

    counts = lt_counts(1280, 1000, 256)  # an ImageNet-LT-like count vector: 1,280 down to 5 per class
    labels = torch.from_numpy(np.repeat(np.arange(1000), counts))
    n, batch = len(labels), get_recipe("imagenet").stage2.batch_size
    assert batch == 512 and max(counts) * 1000 > 5 * n  # the sampler's own length would be 5x longer
    assert len(IndexStream(labels, 1000).epoch("class-balanced", torch.Generator().manual_seed(0))) == n

    class Sized:
        __len__ = lambda self: n  # noqa: E731

    assert TensorLoader.num_batches(Sized(), batch) == int(n / batch) < math.ceil(n / batch)
    for recipe in ("imagenet", "places", "inat", "paper", "cpu"):
        assert TensorLoader.num_batches(Sized(), get_recipe(recipe).stage2.batch_size) == \
            int(n / get_recipe(recipe).stage2.batch_size)


def test_batched_crop_and_flip_are_exact():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, Augment(pad=2, flip=True), gen)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(64):  # each output is one of the 5 x 5 x 2 crops of its own padded image
        candidates = [padded[i, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    again = random_crop_flip(images, Augment(pad=2, flip=True), torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    flip_only = random_crop_flip(images, Augment(pad=0, flip=True), torch.Generator().manual_seed(1))
    flipped = (flip_only != images).flatten(1).any(1)
    assert torch.equal(flip_only[flipped], images[flipped].flip(3))
    assert 10 < int(flipped.sum()) < 54


def test_stage_keys_share_stage1_and_change_with_settings():
    recipe = RECIPES["cpu"]
    spec = {"dataset": "d", "imbalance": 100}
    crt = stage_keys(spec, "resnet32", False, 0, "fp32", [recipe.representation(), recipe.classifier()])
    lws = stage_keys(spec, "resnet32", False, 0, "fp32",
                     [recipe.representation(), Stage("scales", optim=recipe.stage2, trainable="scales")])
    assert crt[0] == lws[0] and crt[1] != lws[1]
    assert stage_keys(spec, "resnet32", False, 1, "fp32", [recipe.representation()])[0] != crt[0]
    assert stage_keys({**spec, "imbalance": 50}, "resnet32", False, 0, "fp32", [recipe.representation()])[0] != crt[0]
    smoothed = stage_keys(spec, "resnet32", False, 0, "fp32", [recipe.representation(label_smoothing=0.1)])
    assert smoothed[0] != crt[0]
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_stage_seeds_are_pinned_and_the_spec_keeps_the_old_flag_name():
    """The seeds (and so the numbers) of a stage depend on its spec only: renaming ``Stage.shared`` to
    ``core_trained`` keeps the name "shared" in the spec, so no seed or key moves with the rename."""
    recipe = RECIPES["smoke"]
    stages = [recipe.representation(), recipe.classifier()]
    assert stage_seeds({"dataset": "d", "imbalance": 100}, "resnet32", False, 0, "fp32", stages) == [
        218837494768518, 272309319342448]  # computed before the rename
    assert stages[0].spec()["shared"] is True and "core_trained" not in stages[0].spec()
    assert stages[0].core_trained and not stages[1].core_trained
    assert not recipe.representation(loss="focal").core_trained


class ReferenceWarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """BagofTricks-LT's lib/utils/lr_scheduler.py:4-46 (commit ce7859a), re-typed: linear warm-up from 1/3, then
    x gamma at each milestone, as a function of the scheduler's ``last_epoch``."""

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_factor=1.0 / 3, warmup_epochs=5):
        self.milestones, self.gamma, self.warmup_factor, self.warmup_epochs = milestones, gamma, warmup_factor, warmup_epochs
        super().__init__(optimizer)

    def get_lr(self):
        warmup_factor = 1
        if self.last_epoch < self.warmup_epochs:
            alpha = float(self.last_epoch) / self.warmup_epochs
            warmup_factor = self.warmup_factor * (1 - alpha) + alpha
        return [base_lr * warmup_factor * self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)
                for base_lr in self.base_lrs]


def reference_rates(make_scheduler, epochs: int) -> list[float]:
    """The rate of each epoch as the references' loops set it: ``scheduler.step()`` at the start of every epoch
    (BagofTricks-LT main/train.py:273-277 for epoch in 1..N; classifier-balancing run_networks.py:247-255)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(1, epochs + 1):
        optimizer.step()  # (the reference steps the scheduler first; this only silences torch's order warning)
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize("optim, make_scheduler", [
    (Optim(epochs=200, lr=0.1, batch_size=128, weight_decay=2e-4, warmup_epochs=5, milestones=(160, 180), gamma=0.01),
     lambda opt: ReferenceWarmupMultiStepLR(opt, [160, 180], gamma=0.01, warmup_epochs=5)),
    (Optim(epochs=30, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=5, milestones=(10, 20)),
     lambda opt: ReferenceWarmupMultiStepLR(opt, [10, 20], gamma=0.1, warmup_epochs=5)),
    (get_recipe("cpu").stage1, lambda opt: ReferenceWarmupMultiStepLR(opt, [24, 28], gamma=0.1, warmup_epochs=2)),
    (Optim(epochs=90, lr=0.1, batch_size=512, weight_decay=5e-4, schedule="cosine"),
     lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 90, eta_min=0.0)),
], ids=["paper-stage1", "paper-stage2", "cpu-stage1", "imagenet-cosine"])
def test_schedule_matches_the_reference_scheduler_epoch_by_epoch(optim, make_scheduler):
    expected = reference_rates(make_scheduler, optim.epochs)
    assert [optim.lr_at(e) for e in range(optim.epochs)] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_every_step_of_an_epoch_runs_at_that_epochs_rate(monkeypatch):
    """The loop sets the rate once per epoch, before its first step: an epoch's last step is not already
    decayed (the old per-step rate ran it at the next epoch's rate) and the warm-up does not rise within an epoch."""
    from ltbench.config import RunConfig
    from ltbench.engine.plan import plan_run
    from ltbench.engine.progress import Reporter
    from ltbench.engine.runner import build_trainer

    plan = plan_run(RunConfig(method="ce", dataset="digits-lt", recipe="smoke", precision="fp32", device="cpu"))
    trainer = build_trainer(plan, Reporter(silent=True))
    optim = Optim(epochs=4, lr=0.1, batch_size=64, weight_decay=0.0, warmup_epochs=3, milestones=(3,), gamma=0.5)
    stage = Stage("probe", optim=optim)
    seen: list[tuple[int, float]] = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append((state.epoch, self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    hooks = plan.hooks(0)
    state = trainer.begin_stage(0, stage, hooks)
    trainer.fit_stage(state, "probe", 0, hooks)
    steps = trainer.loaders["train"].num_batches(64, 1)
    assert steps > 1 and len(seen) == 4 * steps
    expected = [optim.lr_at(e) for e in range(4)]  # warm-up 5/9, 7/9 of lr; the 3rd epoch is the first decayed
    assert expected == pytest.approx([0.1 * (1 / 3 + 2 / 9), 0.1 * (1 / 3 + 4 / 9), 0.05, 0.05])
    assert [lr for _, lr in seen] == pytest.approx([expected[e] for e, _ in seen])
    assert [e for e, _ in seen] == [e for e in range(4) for _ in range(steps)]


@pytest.mark.parametrize("images, batch, expected", [(483, 32, [32] * 15), (31, 32, [31]), (64, 32, [32, 32])])
def test_a_training_epoch_takes_whole_batches_only(images, batch, expected):
    """The references drop a short last batch (BagofTricks-LT drop_last=True; classifier-balancing int(len / batch)
    steps); a data set smaller than one batch keeps its one short batch."""
    from ltbench.data.base import ArraySplit
    from ltbench.data.loaders import TensorLoader

    split = ArraySplit(np.zeros((images, 8, 8, 1), dtype=np.uint8), np.arange(images) % 4)
    loader = TensorLoader(split, 4, (0.5,), (0.5,), Augment(), torch.device("cpu"))
    for kind in ("instance", "class-balanced"):
        sizes = [len(b["y"]) for b in loader.epoch(kind, torch.Generator().manual_seed(0), batch)]
        assert sizes == expected and loader.num_batches(batch) == len(expected)


def test_schedule_lengths():
    optim = Optim(epochs=200, lr=0.1, batch_size=128, weight_decay=2e-4, warmup_epochs=5, milestones=(160, 180),
                  gamma=0.01)
    assert optim.with_epochs(3).warmup_epochs == 1  # a short schedule keeps a warm-up (int() made it 0)
    assert optim.with_epochs(1).warmup_epochs == 0
    assert [optim.lr_at(e) for e in (158, 159, 178, 179)] == pytest.approx([0.1, 0.001, 0.001, 0.00001])
    short = optim.with_epochs(20)
    assert short.milestones == (16, 18) and short.warmup_epochs == 1


@pytest.mark.parametrize("name", ["resnet32", "resnet18", "resnext26ts"])
def test_backbones_keep_the_timm_contract(name):
    model = build_model(name, num_classes=7, in_chans=1)
    out = model(torch.randn(2, 1, 32, 32), feature_maps=3)
    assert out.logits.shape == (2, 7) and len(out.feature_maps) == 3
    assert out.features.shape == (2, model.backbone.num_features)
    model.backbone.reset_classifier(7)
    assert model.classifier.out_features == 7
