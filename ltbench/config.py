"""Typed run configuration, recipe presets and the stage keys that make stage-1 reuse exact."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .errors import ConfigError, did_you_mean
from .ranges import Range  # noqa: F401  (importable from here as before)


@dataclass(frozen=True)
class Optim:
    """Optimiser and schedule of one stage (SGD + linear warm-up + step or cosine decay).

    Warm-up as BagofTricks-LT's WarmupMultiStepLR (stepped once per epoch, lib/utils/utils.py:91-96; its
    shape from BBN's lib/utils/lr_scheduler.py:10,39-40, from which BagofTricks-LT was reorganised): epoch e
    < warmup_epochs runs at lr * (warmup_from + (1 - warmup_from) * e / warmup_epochs), warmup_from = 1/3.
    """

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    momentum: float = 0.9
    warmup_epochs: int = 0
    schedule: str = "step"  # step | cosine
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    nesterov: bool = False
    warmup_from: float = 1 / 3

    def with_epochs(self, epochs: int) -> "Optim":
        """Same schedule shape over a different length: milestones and warm-up scale with it (a warm-up
        never shrinks to nothing: at least one epoch while the stage has two)."""
        if epochs == self.epochs:
            return self
        ratio = epochs / self.epochs
        milestones = tuple(sorted({max(1, round(m * ratio)) for m in self.milestones if round(m * ratio) < epochs}))
        warmup = min(max(round(self.warmup_epochs * ratio), 1), max(epochs - 1, 0)) if self.warmup_epochs else 0
        return replace(self, epochs=epochs, milestones=milestones, warmup_epochs=warmup)

    def lr_at(self, epoch: float) -> float:
        """Learning rate at a (fractional) epoch: warm-up and steps change per epoch, cosine per step."""
        import math

        if self.warmup_epochs and epoch < self.warmup_epochs:
            alpha = math.floor(epoch) / self.warmup_epochs
            return self.lr * (self.warmup_from + (1 - self.warmup_from) * alpha)
        if self.schedule == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1)
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(epoch - self.warmup_epochs, span) / span))
        if self.schedule == "constant":
            return self.lr
        factor = 1.0
        for milestone in self.milestones:
            if epoch >= milestone:
                factor *= self.gamma
        return self.lr * factor


TRAINABLE = ("all", "classifier", "scales", "none")
SAMPLERS = ("instance", "class-balanced", "sqrt", "progressive")
BN_MODES = ("train", "frozen")


@dataclass(frozen=True)
class Stage:
    """One training stage, described as data so that it can be hashed, cached and shared.

    ``loss`` names the loss: "ce" (cross-entropy, with ``options['label_smoothing']``) is understood by
    every method; a method that defines its own loss names the stage's loss after itself, and its
    options (switches) go into ``options`` so that they become part of the stage key.
    """

    name: str
    optim: Optim | None = None
    trainable: str = "all"
    sampler: str = "instance"
    loss: str = "ce"
    options: tuple[tuple[str, Any], ...] = ()
    reinit_classifier: bool = False
    post: str | None = None  # name of the post-hoc step (``Method.post_stage``) run after this stage's training
    bn: str = "frozen"  # stages with a frozen backbone: "train" re-estimates its BN statistics, "frozen" keeps them
    shared: bool = False  # the plain CE stage 1 (``Recipe.representation()``): trained by the core's hooks alone

    def __post_init__(self):
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"stage '{self.name}': trainable must be one of {TRAINABLE}, got '{self.trainable}'")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"stage '{self.name}': sampler must be one of {SAMPLERS}, got '{self.sampler}'")
        if self.bn not in BN_MODES:
            raise ConfigError(f"stage '{self.name}': bn must be one of {BN_MODES}, got '{self.bn}'")
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def epochs(self) -> int:
        return self.optim.epochs if self.optim and self.trainable != "none" else 0

    @property
    def cached(self) -> bool:
        """Stages that train leave an artifact for later runs; post-hoc ones take seconds and do not."""
        return self.trainable != "none"

    def spec(self) -> dict:
        spec = dataclasses.asdict(self)
        spec["options"] = {k: v for k, v in self.options}
        # a removed field that nothing read; the stage keys of existing artifacts hashed it, so it stays here
        spec["intermediates"] = False
        return spec


@dataclass(frozen=True)
class Recipe:
    """Schedule presets: stage 1 (representation) and stage 2 (classifier balancing); ``lws_epochs``: LWS's
    own stage-2 length where its reference differs from cRT's (classifier-balancing: 5 against 10)."""

    name: str
    stage1: Optim
    stage2: Optim
    description: str = ""
    lws_epochs: int | None = None

    def representation(self, loss: str = "ce", **options) -> Stage:
        """The plain stage 1 shared by every decoupled method (same spec, same key, trained once). With the
        "ce" loss it is ``shared``: the runner trains it with the base ``Method``'s hooks, so no method's
        code can change it, and its key covers the core's code, not the method's."""
        return Stage("representation", optim=self.stage1, loss=loss, options=options, shared=loss == "ce")

    def classifier(self, name: str = "classifier", trainable: str = "classifier", reinit: bool = True,
                   sampler: str = "class-balanced", loss: str = "ce", bn: str = "train", optim: Optim | None = None,
                   **options) -> Stage:
        """A classifier-balancing stage on frozen features. ``bn="train"`` by default: classifier-balancing
        (run_networks.py:247-249, every network in train mode; the frozen backbone only loses its gradients,
        :115-120) and BagofTricks-LT (lib/core/function.py:21-24, model.train()) re-estimate the backbone's
        BN statistics under the class-balanced sampler (MiSLAS' shift_bn); "frozen" keeps them."""
        return Stage(name, optim=optim or self.stage2, trainable=trainable, sampler=sampler,
                     reinit_classifier=reinit, loss=loss, options=options, bn=bn)


# CIFAR-LT: BagofTricks-LT configs/cao_cifar/baseline/cifar10_im100.yaml:28-42 (batch 128, 200 epochs, lr 0.1,
# momentum 0.9, wd 2e-4, warm-up 5, x0.01 at 160 and 180) with Nesterov SGD (lib/utils/utils.py:56-61);
# stage 2: configs/cao_cifar/two_stage/classifier_balance/cRT/cifar10_im100.yaml:33-47 (30 epochs, lr 0.1,
# wd 5e-4, warm-up 5, x0.1 at 10 and 20; LWS the same). Large data sets: classifier-balancing's configs
# (plain SGD, cosine to 0, config/<dataset>/{feat_uniform,cls_crt,cls_lws}.yaml).
CIFAR_STAGE1 = Optim(epochs=200, lr=0.1, batch_size=128, weight_decay=2e-4, warmup_epochs=5, milestones=(160, 180),
                     gamma=0.01, nesterov=True)
CIFAR_STAGE2 = Optim(epochs=30, lr=0.1, batch_size=128, weight_decay=5e-4, warmup_epochs=5, milestones=(10, 20),
                     gamma=0.1, nesterov=True)

RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper", CIFAR_STAGE1, CIFAR_STAGE2, "CIFAR-LT paper schedule: 200 + 30 epochs (BagofTricks-LT)"),
    "imagenet": Recipe(
        "imagenet",
        # ImageNet-LT/feat_uniform.yaml (ResNeXt-50, 90 epochs), cls_crt.yaml (10), cls_lws.yaml (5)
        Optim(epochs=90, lr=0.2, batch_size=512, weight_decay=5e-4, schedule="cosine"),
        Optim(epochs=10, lr=0.2, batch_size=512, weight_decay=5e-4, schedule="cosine"),
        "ImageNet-LT schedule of Kang et al.: 90 + 10 epochs (LWS 5), batch 512, lr 0.2, wd 5e-4, cosine",
        lws_epochs=5,
    ),
    "inat": Recipe(
        "inat",
        # iNaturalist18/feat_unifrom.yaml (ResNet-50, 90 epochs, wd 1e-4), cls_crt.yaml (30), cls_lws.yaml (5)
        Optim(epochs=90, lr=0.2, batch_size=512, weight_decay=1e-4, schedule="cosine"),
        Optim(epochs=30, lr=0.2, batch_size=512, weight_decay=1e-4, schedule="cosine"),
        "iNaturalist-18 schedule of Kang et al.: 90 + 30 epochs (LWS 5), batch 512, lr 0.2, wd 1e-4, cosine",
        lws_epochs=5,
    ),
    "places": Recipe(
        "places",
        # Places_LT/cls_crt.yaml (ResNet-152, batch 256, classifier lr 0.1, wd 5e-4, 10 epochs), cls_lws.yaml
        # (5). The repository has no Places-LT stage-1 config (the paper fine-tunes an ImageNet-pretrained
        # ResNet-152): stage 1 here is the cls configs' optimiser over 30 epochs; pass --pretrained.
        Optim(epochs=30, lr=0.1, batch_size=256, weight_decay=5e-4, schedule="cosine"),
        Optim(epochs=10, lr=0.1, batch_size=256, weight_decay=5e-4, schedule="cosine"),
        "Places-LT schedule of Kang et al. (stage 2: 10 epochs, LWS 5, batch 256, lr 0.1, wd 5e-4, cosine); "
        "stage 1 not published: 30 epochs of the same optimiser (start from --pretrained)",
        lws_epochs=5,
    ),
    "cpu": Recipe(
        "cpu",
        replace(CIFAR_STAGE1, epochs=30, warmup_epochs=2, milestones=(24, 28), gamma=0.1),
        replace(CIFAR_STAGE2, epochs=10, warmup_epochs=1, milestones=(6, 8)),
        "the paper schedule's shape shortened to 30 + 10 epochs for 2 CPU cores (not comparable with paper numbers)",
    ),
    "tiny": Recipe(
        "tiny",
        replace(CIFAR_STAGE1, epochs=30, lr=0.025, batch_size=32, warmup_epochs=2, milestones=(24, 28), gamma=0.1),
        replace(CIFAR_STAGE2, epochs=10, lr=0.025, batch_size=32, warmup_epochs=1, milestones=(6, 8)),
        "the cpu recipe at batch 32 (lr scaled linearly) for data sets of a few hundred images (digits-lt)",
    ),
    "smoke": Recipe(
        "smoke",
        replace(CIFAR_STAGE1, epochs=3, lr=0.025, batch_size=32, warmup_epochs=0, milestones=(2,), gamma=0.1),
        replace(CIFAR_STAGE2, epochs=2, lr=0.025, batch_size=32, warmup_epochs=0, milestones=()),
        "seconds on digits-lt: checks that everything runs, not what it scores",
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'{did_you_mean(name, RECIPES, n=1)} "
                          f"(choose from {', '.join(RECIPES)})")
    return RECIPES[name]


def setting(default: Any = None, *, factory: Callable | None = None, defining: bool = False,
            resolved_later: bool = False, suite: bool = True, cli: str | None = None) -> Any:
    """A RunConfig field and what it is to the rest of ltbench, said once here (``dataclasses.field`` metadata):

    - ``defining``: part of what the run computes: a resumed run takes it from its config.json, and one given
      again with ``--resume`` must agree (the others, such as the device or the data root, may differ);
    - ``resolved_later``: the default stands for a value the run resolves (None: the dataset's; "auto": the
      machine's), so on ``--resume`` it agrees with whatever the run resolved it to;
    - ``suite``: a suite file may set it (False: the sweep sets it itself, per run);
    - ``cli``: the ``ltbench run`` parameter that gives it, where its name differs from the field's.
    """
    metadata = {"defining": defining, "resolved_later": resolved_later, "suite": suite, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    """Everything that defines a run. Resolved values are written to the run's config.json. Each field's
    metadata (``setting``) says whether it defines the run, whether suites may set it, and its CLI name."""

    method: str = setting("dasl", defining=True, suite=False)
    method_options: dict = setting(factory=dict, defining=True, suite=False, cli="option")
    dataset: str = setting("digits-lt", defining=True, suite=False)
    imbalance: float | None = setting(None, defining=True, resolved_later=True)  # None: the dataset's default
    profile: str = setting("exp", defining=True)  # exp (LDAM-DRW rule) | step
    subset_seed: int = setting(0, defining=True)  # numpy seed of the LT subset (docs/protocol.md: default 0)
    val_per_class: int | None = setting(None, defining=True, resolved_later=True)  # None: the dataset's default
    backbone: str | None = setting(None, defining=True, resolved_later=True)  # None: the dataset's default
    pretrained: bool = setting(False, defining=True)
    recipe: str | None = setting(None, defining=True, resolved_later=True)  # None: the dataset's default
    epochs: int | None = setting(None, defining=True)
    stage2_epochs: int | None = setting(None, defining=True)
    batch_size: int | None = setting(None, defining=True)
    lr: float | None = setting(None, defining=True)
    stage2_lr: float | None = setting(None, defining=True)
    seed: int = setting(0, defining=True, suite=False)
    device: str = setting("auto")
    precision: str = setting("auto", defining=True, resolved_later=True)  # auto | fp32 | bf16 | fp16
    compile: bool = setting(False, defining=True, cli="compile_model")
    tensorboard: bool = setting(False)  # also write the per-epoch scalars for TensorBoard (RUN/tensorboard/)
    data_root: str | None = setting(None)
    out: str = setting("results", suite=False, cli="results")
    run_name: str | None = setting(None, suite=False)
    resume: bool = setting(False, suite=False)
    # --retrain: stage artifacts older than this time (epoch s) are not reused
    retrain_before: float | None = setting(None, suite=False, cli="retrain")
    plugins: list = setting(factory=list)
    eval_batch_size: int = setting(1024)
    workers: int | None = setting(None)  # DataLoader workers of file-list data (None: data.loaders.default_workers)
    # --time-limit: the wall-clock time (epoch s) by which the run stops at an epoch boundary, with a checkpoint
    deadline: float | None = setting(None, suite=False, cli="time_limit")
    # --log-test-acc: test top-1 after every epoch in epochs.jsonl (a log, never a choice; not in any key)
    test_every_epoch: bool = setting(False, cli="log_test_acc")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def defining_fields() -> tuple[str, ...]:
    """The RunConfig fields that define what a run computes (``setting(defining=True)``), in field order."""
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["defining"])


def resolved_later() -> dict[str, Any]:
    """Field -> its default, for the fields whose default stands for a value the run resolves."""
    return {f.name: f.default for f in dataclasses.fields(RunConfig) if f.metadata["resolved_later"]}


def not_in_suites() -> tuple[str, ...]:
    """The RunConfig fields a suite file may not set: the sweep sets them per run."""
    return tuple(f.name for f in dataclasses.fields(RunConfig) if not f.metadata["suite"])


def cli_parameter(name: str) -> str:
    """The ``ltbench run`` parameter that gives RunConfig field ``name``."""
    return next(f.metadata["cli"] or f.name for f in dataclasses.fields(RunConfig) if f.name == name)


def cli_to_config() -> dict[str, str]:
    """``ltbench run`` parameter -> RunConfig field, where the two names differ."""
    return {f.metadata["cli"]: f.name for f in dataclasses.fields(RunConfig) if f.metadata["cli"]}


# The numeric RunConfig fields and their allowed values: checked for `ltbench run` (named by their option)
# and for suite files (named by file and key) before anything is planned or trained.
SETTING_RANGES: dict[str, Range] = {
    "imbalance": Range(1),  # max / min class count; the data set bounds it too (no class may keep 0 images)
    "epochs": Range(1),
    "stage2_epochs": Range(1),
    "batch_size": Range(1),
    "lr": Range(0, bounds="()"),
    "stage2_lr": Range(0, bounds="()"),
    "seed": Range(0, 2**32 - 1),  # torch, NumPy and Python generators all take it
    "subset_seed": Range(0, 2**32 - 2),  # NumPy's RandomState, and seed + 1 for the validation split
    "val_per_class": Range(0),
    "eval_batch_size": Range(1),
}


# a stage of 0 epochs trains nothing, yet its run would finish and its row stand in tables like any other
SETTING_WHY = {"imbalance": "the imbalance factor is the largest class count over the smallest",
               "epochs": "every stage must train; post-hoc steps come on top of a trained stage",
               "stage2_epochs": "every stage must train; post-hoc steps come on top of a trained stage"}


def setting_problem(name: str, value) -> str | None:
    """What is wrong with a value of a numeric RunConfig field ("must be >= 1 (why)"), or None."""
    allowed = SETTING_RANGES.get(name)
    problem = None if allowed is None or value is None else allowed.problem(value)
    return f"{problem} ({SETTING_WHY[name]})" if problem and name in SETTING_WHY else problem


def check_settings(config: "RunConfig") -> None:
    """Refuse an out-of-range run setting with one line naming its command-line option."""
    for name in SETTING_RANGES:
        value = getattr(config, name)
        problem = setting_problem(name, value)
        if problem:
            shown = f"{value:g}" if isinstance(value, float) else value
            raise ConfigError(f"--{name.replace('_', '-')} {shown}: {problem}")


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short content hash of a JSON-able object (sorted keys, so dict order never matters)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def scaled_optim(optim: Optim, batch_size: int | None, lr: float | None, epochs: int | None,
                 notices: list[str], label: str) -> Optim:
    """Apply CLI overrides; a batch size other than the recipe's scales the lr linearly (Goyal et al.)."""
    if epochs is not None:
        if epochs < 1:  # a stage that trains nothing (and a run whose row then looks like any other)
            raise ConfigError(f"{label} epochs must be >= 1, got {epochs}")
        optim = optim.with_epochs(epochs)
    base_lr = lr if lr is not None else optim.lr
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"{label} learning rate must be > 0 and finite, got {lr:g}")
    if batch_size is not None and batch_size != optim.batch_size:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        new_lr = base_lr * batch_size / optim.batch_size
        notices.append(
            f"{label}: batch size {batch_size} instead of the recipe's {optim.batch_size}: "
            f"learning rate scaled linearly {base_lr:g} -> {new_lr:g}"
        )
        return replace(optim, batch_size=batch_size, lr=new_lr)
    return replace(optim, lr=base_lr)
