"""The Method interface: a method is data (its stages) plus a few hooks; the runner owns the rest."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .config import Range, Recipe, Stage
from .errors import ConfigError
from .models.heads import LTModel, Outputs
from .registry import create_method  # noqa: F401  (lives with the registry; importable from here as before)


@dataclass
class DataInfo:
    """Runtime facts injected into every method (never re-derived by a method)."""

    num_classes: int
    class_counts: torch.Tensor  # train counts of the LT subset, on the training device
    shot_groups: torch.Tensor  # 0 many, 1 medium, 2 few
    device: torch.device


@dataclass
class StageState:
    """What hooks see during a stage."""

    stage: Stage
    stage_index: int
    data: DataInfo
    model: LTModel
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    evaluate: Callable | None = None  # evaluate("val") -> (logits, labels, features) with the current model
    log: Callable[[str], None] = print

    @property
    def progress(self) -> float:
        """Fraction of the stage done (0 at its first step, -> 1 at its end)."""
        total = max(self.epochs * max(self.steps_per_epoch, 1), 1)
        return (self.epoch * max(self.steps_per_epoch, 1) + self.step) / total


def _coerce(name: str, value: Any, default: Any, choices) -> Any:
    """CLI and suite files give strings; convert to the default's type and check choices."""
    try:
        if isinstance(default, bool) and isinstance(value, str):
            lowered = value.lower()
            if lowered not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                raise ValueError
            value = lowered in ("true", "on", "1", "yes")
        elif isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int) and not isinstance(default, bool):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        elif isinstance(default, str):
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name}={value!r}: expected a {type(default).__name__}") from None
    if isinstance(value, float) and value != value:  # NaN slips through every comparison: never a setting
        raise ConfigError(f"option {name}=nan: expected a number")
    if choices and value not in choices:
        raise ConfigError(f"option {name}={value!r}: choose one of {', '.join(map(str, choices))}")
    return value


class Method:
    """Base class. Subclasses register with ``@register_method(name, summary=...)``, declare
    ``defaults`` (option -> default), optional ``choices``, ``ranges`` and ``help``, and return their stages.

    ``ranges`` states the values a numeric option may take, checked when the method is created (before
    anything trains): ``{"epsilon": (0, 1, "[)")}`` for [0, 1), ``{"tau": Range(0, 2, also=(-1,))}`` for
    [0, 2] or -1, ``{"grid_step": Range(0, bounds="()")}`` for > 0 (see ``ltbench.config.Range``).
    """

    name: str = ""
    family: str = ""  # for `ltbench methods`: re-weighting, margin, logit adjustment, decoupling, augmentation, ...
    reference: str = ""  # the reference implementation it follows ("kaidic/LDAM-DRW losses.py")
    defaults: dict = {}
    choices: dict = {}
    ranges: dict = {}
    help: dict = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise ConfigError(f"method '{self.name}' has no option {', '.join(unknown)} (its options: {known})")
        self.options = {k: _coerce(k, options.get(k, v), v, self.choices.get(k)) for k, v in self.defaults.items()}
        for key, spec in self.ranges.items():
            if key not in self.defaults:
                raise ConfigError(f"method '{self.name}' declares a range for '{key}', which is not one of its options")
            problem = Range.of(spec).problem(self.options[key])
            if problem:
                raise ConfigError(f"method '{self.name}': option {key}={self.options[key]!r} {problem} "
                                  f"(`ltbench methods {self.name}` lists its options)")

    @classmethod
    def option_range(cls, key: str) -> Range | None:
        return Range.of(cls.ranges[key]) if key in cls.ranges else None

    @classmethod
    def dataset_defaults(cls, dataset: str, imbalance: float | None, options: dict) -> dict:
        """Defaults that follow the reference's configuration of one data set, where the reference configures
        an option per data set (BagofTricks-LT's cb beta: 0.9 on CIFAR-100-LT, 0.9999 on CIFAR-10-LT): option ->
        value, given the data set, its imbalance factor and the options set by the user (``options``, which
        always win). ``create_method(..., dataset=...)`` applies them, so the method's ``options``, its stage keys
        and the run's config.json hold the resolved values. None by default ({})."""
        return {}

    @classmethod
    def defaults_for(cls, dataset: str, imbalance: float | None, options: dict | None = None) -> dict:
        """``defaults`` with the data set's ``dataset_defaults`` over them (what config.json records)."""
        return {**cls.defaults, **cls.dataset_defaults(dataset, imbalance, dict(options or {}))}

    # declaration -----------------------------------------------------------------------------------
    def stages(self, recipe: Recipe) -> list[Stage]:
        raise NotImplementedError

    # hooks (all optional) --------------------------------------------------------------------------
    def stage_hooks(self, index: int) -> "Method":
        """Whose hooks train stage ``index`` of this method's stages: itself by default; a method built from
        others' stages returns theirs (MiSLAS: mixup's for stage 1). Its code joins the stage key."""
        return self

    def setup(self, model: LTModel, data: DataInfo) -> None:
        """Prepare the model for the method's own stages (add modules to ``model.extras``, say), once, with torch
        seeded with the run's seed: before stage 1 when that is the method's own, else after the shared CE
        stage is trained or loaded and before the method's first own stage, so it never changes what other
        runs reuse."""

    def feature_maps(self, stage: Stage):
        """Which stage maps the loss needs (timm ``indices``), or None."""
        return None

    def trainable_parameters(self, model: LTModel, stage: Stage) -> list:
        """Parameters trained in ``stage``; extras other than logit scales train only with 'all'. May also
        return optimizer parameter groups (dicts with "params" and an optional "lr_scale" on the stage lr)."""
        if stage.trainable == "all":
            return list(model.parameters())
        if stage.trainable == "classifier":
            return list(model.classifier.parameters())
        if stage.trainable == "scales":  # the extras that rescale the logits (LWS' LogitScales)
            return [p for m in model.extras.values() if getattr(m, "role", None) == "logits" for p in m.parameters()]
        return []

    def classifier(self, in_features: int, num_classes: int) -> nn.Module | None:
        """Head choice: a module that replaces the backbone's linear classifier for all of this method's
        stages (LDAM-DRW's cosine classifier), built once before any stage; None keeps timm's. A method whose
        first stage is the shared CE stage cannot replace it (that stage is CE's)."""
        return None

    def sampler(self, state: StageState) -> str:
        """The sampler of this epoch (one of ``config.SAMPLERS``), asked at each epoch start; the stage's by
        default. DRS switches from instance to class-balanced sampling at an epoch."""
        return state.stage.sampler

    def class_weights(self, state: StageState) -> torch.Tensor | None:
        """Per-class weights of the default loss (weighted cross-entropy), asked at every step; None: none.
        DRW returns effective-number weights from its deferred epoch on."""
        return None

    def transform_batch(self, batch: dict, state: StageState) -> dict:
        """A training batch before the forward pass; may change inputs and targets (mixup mixes ``x`` and adds
        its partner labels). ``batch["y"]`` must stay the batch's labels: train accuracy counts against them."""
        return batch

    def test_logits(self, logits: torch.Tensor, data: DataInfo) -> torch.Tensor:
        """Test-time transform of the logits of the final stage (post-hoc logit adjustment), applied to every
        evaluation after that stage's training and post-hoc step (``post_stage`` tunes on the untransformed
        logits): never part of a stored stage, and refused when the final stage is the shared CE stage."""
        return logits

    def on_stage_start(self, state: StageState) -> None:
        pass

    def on_epoch_start(self, state: StageState) -> None:
        pass

    def on_epoch_end(self, state: StageState) -> None:
        pass

    def loss(self, out: Outputs, batch: dict, state: StageState) -> torch.Tensor:
        """Cross-entropy with the stage's ``label_smoothing`` (0 by default) and ``class_weights`` (weighted mean,
        as ``nn.CrossEntropyLoss(weight=...)``)."""
        return F.cross_entropy(out.logits.float(), batch["y"], weight=self.class_weights(state),
                               label_smoothing=state.stage.opts.get("label_smoothing", 0.0))

    def post_stage(self, state: StageState) -> dict:
        """The post-hoc step of each stage that declares one (``Stage(post=...)``), run after that stage's
        training and after its artifact is saved (or loaded), so it never changes a shared artifact; e.g.
        tau-norm picks tau on validation data (``state.evaluate`` gives the logits before ``test_logits``, which
        applies only after this step). Returns facts to record in metrics.json."""
        return {}

    def tunes_on_validation(self) -> bool:
        """True when this configuration picks a value on the validation split (tau-norm's tau, say): the run
        is refused on data sets whose only held-out split is the test set."""
        return False

    # method state (saved with stage artifacts and checkpoints) --------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
