"""Typed run configuration: RunConfig, what each field is to the rest of ltbench (``setting``) and the allowed
range of each numeric setting.

What a stage computes (Optim, Stage, Recipe, the recipe presets, lr scaling, stable_hash) lives in recipes.py,
whose code is in every stage key; it is re-exported here, so ``from ltbench.config import Stage`` keeps working.
Nothing here is in a stage key: editing a field's help or range invalidates no stored stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError
from .ranges import Range  # noqa: F401  (importable from here as before)
from .recipes import (BN_MODES, CIFAR_STAGE1, CIFAR_STAGE2, RECIPES, SAMPLERS, TRAINABLE,  # noqa: F401  (re-exported)
                      Optim, Recipe, Stage, get_recipe, scaled_optim, stable_hash)


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
    # 256: a 32x32 batch's largest activation (16 x 32 x 32 fp32 per image) stays under the 32 MB that the C
    # allocator keeps (engine/memory.py); at 1024 every layer's output faults its pages in again (1.8x the time)
    eval_batch_size: int = setting(256)
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
