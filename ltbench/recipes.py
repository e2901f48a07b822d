"""What a stage computes, as data: the optimiser and schedule (``Optim``), the stage (``Stage``), the recipe
presets (``Recipe``, ``RECIPES``), the batch-size learning-rate scaling (``scaled_optim``) and the hash that
stage keys are made of (``stable_hash``).

This module is in every stage key's code hash (``CORE_FILES`` in fingerprint.py): nothing that computes
nothing (run settings, their metadata and ranges, CLI text) belongs here; that is config.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Optim:
    """Optimiser and schedule of one stage (SGD + linear warm-up + step or cosine decay), one rate per epoch.

    Both references step a torch scheduler once at the START of every epoch, numbered from 1: BagofTricks-LT's
    WarmupMultiStepLR (lib/utils/lr_scheduler.py:33-46, stepped at main/train.py:277, commit ce7859a) and
    classifier-balancing's CosineAnnealingLR (run_networks.py:159-160, stepped at :255, commit f162ade). So the
    epoch with index e (from 0) runs at their ``last_epoch = e + 1``: warm-up factor warmup_from + (1 -
    warmup_from) * (e + 1) / warmup_epochs while e + 1 < warmup_epochs (5 warm-up epochs: 7/15, 9/15, 11/15,
    13/15 of lr, then lr), x gamma for every milestone <= e + 1 (milestone 160: the 160th epoch is the first
    decayed one), cosine 0.5 * lr * (1 + cos(pi * (e + 1) / epochs)) (the last epoch runs at 0, eta_min).
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

    def lr_at(self, epoch: int) -> float:
        """Learning rate of every step of the epoch with index ``epoch`` (from 0); see the class docstring."""
        last_epoch = epoch + 1  # the references' scheduler count during this epoch
        factor = 1.0
        if self.warmup_epochs and last_epoch < self.warmup_epochs:
            alpha = last_epoch / self.warmup_epochs
            factor = self.warmup_from * (1 - alpha) + alpha
        if self.schedule == "cosine":
            return factor * 0.5 * self.lr * (1 + math.cos(math.pi * min(last_epoch, self.epochs) / self.epochs))
        if self.schedule == "constant":
            return factor * self.lr
        return factor * self.lr * self.gamma ** sum(milestone <= last_epoch for milestone in self.milestones)


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
    # trained by the core's hooks (base ``Method``), never the method's: the plain CE stage 1 of
    # ``Recipe.representation()`` that decoupled methods share (its key in ``spec()``: "shared", as before)
    core_trained: bool = False

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
        # renamed from ``shared``; the stage keys of existing artifacts hashed that name, so the spec keeps it
        spec["shared"] = spec.pop("core_trained")
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
        "ce" loss it is ``core_trained``: the runner trains it with the base ``Method``'s hooks, so no method's
        code can change it, and its key covers the core's code, not the method's. A method that trains its
        own stage 1 names its loss: ``recipe.representation(loss="focal", gamma=1.0)``."""
        return Stage("representation", optim=self.stage1, loss=loss, options=options, core_trained=loss == "ce")

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
