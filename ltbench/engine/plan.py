"""Planning a run: the method, data, recipe, stages and their cache keys, before anything is trained.

Cheap (no model is built), so ``sweep --dry-run`` plans with it too.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..config import RunConfig, Stage, check_settings, get_recipe, scaled_optim, stable_hash
from ..data import DataBundle, build_data
from ..errors import ConfigError, NotFoundError
from ..method import Method, create_method
from .precision import resolve_device, resolve_precision

SHARED_HOOKS = Method()  # the hooks of the shared CE stage: the core's, whatever the method


@dataclass
class Plan:
    """A resolved run: what will be trained or reused, under which keys."""

    config: RunConfig
    method: Method
    data: DataBundle
    recipe_name: str
    backbone: str
    stages: list[Stage]
    keys: list[str]
    run_key: str
    device: torch.device
    precision: str
    notices: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # per stage: see stage_seeds

    def hooks(self, index: int) -> Method:
        """Whose hooks train stage ``index``: the shared CE stage is the core's alone (base ``Method``), so no
        method's code can make the artifact that cRT, LWS, tau-norm and NCM reuse differ from CE's; any
        other stage the method's ``stage_hooks(index)`` (itself, unless it is built from other methods' stages),
        by position as ``stage_code`` hashes them."""
        return SHARED_HOOKS if self.stages[index].core_trained else self.method.stage_hooks(index)

    def setup_index(self) -> int | None:
        """Where ``Method.setup`` runs when the run opens with core-trained stages: before the first stage the
        method's hooks train (None: there is none, or stage 1 is the method's, so setup runs at model build)."""
        if not self.stages[0].core_trained:
            return None
        return next((index for index, stage in enumerate(self.stages) if not stage.core_trained), None)

    def test_transform(self, index: int):
        """``Method.test_logits`` after the final stage's training, when the method defines it."""
        if index != len(self.stages) - 1 or type(self.method).test_logits is Method.test_logits:
            return None
        return self.method.test_logits

    def describe(self) -> str:
        info = self.data.info
        parts = [f"IF {info['imbalance']:g}" if info.get("imbalance") else "published LT split",
                 f"train {info['train_size']}", f"backbone {self.backbone}", f"recipe {self.recipe_name}",
                 f"seed {self.config.seed}", f"{self.device.type} {self.precision}"]
        return ", ".join(parts)


def data_spec(dataset: str, data: DataBundle) -> dict:
    """What identifies the training data of a stage: the LT subset rule, its seed, and a fingerprint of the
    actual images and labels (train and validation), so another copy of the data is another key."""
    return data.spec.key(data.fingerprint)


def stage_code(method: Method, stages: list[Stage]) -> list[str]:
    """Per stage, the hash of the code that trains it: the core's, plus the method's own source unless the
    stage is the shared CE stage (trained by the core's hooks alone). A stage another method's hooks train
    (``stage_hooks``) hashes that method's source as that method does, so MiSLAS reuses mixup's stage 1,
    unless this method also shapes the model every stage trains (``classifier`` or ``setup``)."""
    from ..fingerprint import core_code, method_code

    own = method_code(method)
    shapes_model = any(getattr(type(method), hook) is not getattr(Method, hook) for hook in ("classifier", "setup"))
    codes = []
    for index, stage in enumerate(stages):
        hooks = method.stage_hooks(index)
        if stage.core_trained:
            codes.append(core_code())
        elif hooks is method:
            codes.append(f"{core_code()}+{own}")
        elif shapes_model:
            codes.append(f"{core_code()}+{own}+{method_code(hooks)}")
        else:  # trained by the other method's hooks alone, on the same model: its artifact, its code
            codes.append(f"{core_code()}+{method_code(hooks)}")
    return codes


def stage_keys(data_spec: dict, backbone: str, pretrained: bool, seed: int, precision: str,
               stages: list[Stage], code: list[str] | None = None) -> list[str]:
    """key_i = hash(data, backbone, seed, precision, code_i, key_{i-1}, spec_i): a changed setting, image or
    line of code anywhere upstream is a new key, and methods whose first stages agree share their artifacts."""
    keys, previous = [], None
    for stage, code_i in zip(stages, code or [None] * len(stages)):
        previous = stable_hash({"data": data_spec, "backbone": backbone, "pretrained": pretrained, "seed": seed,
                                "precision": precision, "code": code_i, "previous": previous,
                                "stage": stage.spec()})
        keys.append(previous)
    return keys


def stage_seeds(data_spec: dict, backbone: str, pretrained: bool, seed: int, precision: str,
                stages: list[Stage]) -> list[int]:
    """Per stage, the seed of its random streams: the stage keys without the code hashes, so a refactor or a
    comment in the core changes which artifacts are reused (the keys) but not the numbers a run gives."""
    return [int(key[:12], 16) for key in stage_keys(data_spec, backbone, pretrained, seed, precision, stages)]


def plugin_problems(config: RunConfig) -> list[str]:
    """Import failures of the plugin paths this run names (the registry keeps them all, process-wide)."""
    from ..registry import METHODS, PLUGIN_ENV

    paths = [str(Path(p)) for p in config.plugins or []]
    paths += [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
    return [" ".join(problem.split()) for problem in METHODS.load_errors
            if problem.startswith("entry point") or any(path in problem for path in paths)]


def plan_run(config: RunConfig, download: bool = False) -> Plan:
    """Everything up to (not including) training: cheap, so `sweep --dry-run` uses it too."""
    check_settings(config)
    try:
        method = create_method(config.method, config.method_options, config.plugins)
    except NotFoundError as exc:
        problems = plugin_problems(config)
        if problems:  # the method may live in the file that failed: say so on the same line
            raise NotFoundError(f"{exc}; {'; '.join(problems)}") from None
        raise
    data = build_data(config.dataset, config.data_root, config.imbalance, config.profile, config.subset_seed,
                      config.val_per_class, download)
    source = data.source
    # options the reference sets per data set (cb's beta on CIFAR-100-LT) resolved now that the data set is known
    method = create_method(config.method, config.method_options, config.plugins, dataset=config.dataset,
                           imbalance=data.info.get("imbalance"))
    recipe = get_recipe(config.recipe or source.default_recipe)
    notices: list[str] = []  # plan-level facts, kept in config.json (plugin problems are warnings, printed apart)
    stage1 = scaled_optim(recipe.stage1, config.batch_size, config.lr, config.epochs, notices, "stage 1")
    stage2 = scaled_optim(recipe.stage2, config.batch_size, config.stage2_lr, config.stage2_epochs, notices, "stage 2")
    recipe = replace(recipe, stage1=stage1, stage2=stage2,  # an explicit stage-2 length applies to LWS too
                     lws_epochs=recipe.lws_epochs if config.stage2_epochs is None else None)
    stages = method.stages(recipe)
    check_stages(method, stages, data, config.dataset)
    check_batch_size(stages, data, config)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    backbone = config.backbone or source.default_backbone
    spec = data_spec(config.dataset, data)
    keys = stage_keys(spec, backbone, config.pretrained, config.seed, precision, stages, stage_code(method, stages))
    seeds = stage_seeds(spec, backbone, config.pretrained, config.seed, precision, stages)
    run_key = stable_hash({"method": config.method, "options": method.options, "final_stage": keys[-1]})
    return Plan(config, method, data, recipe.name, backbone, stages, keys, run_key, device, precision, notices, seeds)


# The hooks that train a stage, called on the hooks object of that stage (``Plan.hooks``): on a core-trained
# stage that is the base ``Method``, whatever the method's ``stage_hooks`` says. ``on_stage_start`` runs on
# every stage of its hooks object; the others only on one that trains (``trainable`` not "none").
TRAINING_HOOKS = ("on_stage_start", "trainable_parameters", "feature_maps", "sampler", "on_epoch_start",
                  "transform_batch", "loss", "class_weights", "on_epoch_end")


def never_run(method: Method, stages: list[Stage]) -> list[str]:
    """The hooks a method overrides (on itself or on a hooks object ``stage_hooks`` gives a stage) that run on
    none of its stages because each stage they were given to is core-trained: code whose effect the run's
    numbers would silently lack. ``setup`` counts too when every stage is core-trained (it runs before the
    first stage the method's own hooks train)."""
    def code(hooks: Method, hook: str):
        return getattr(type(hooks), hook, None)

    runs = {(hook, code(method.stage_hooks(index), hook))
            for index, stage in enumerate(stages) if not stage.core_trained
            for hook in TRAINING_HOOKS if hook == "on_stage_start" or stage.trainable != "none"}
    dead = []
    for index, stage in enumerate(stages):
        if stage.core_trained:
            hooks = method.stage_hooks(index)
            dead += [hook for hook in TRAINING_HOOKS if code(hooks, hook) is not code(SHARED_HOOKS, hook)
                     and (hook, code(hooks, hook)) not in runs and hook not in dead]
    if all(stage.core_trained for stage in stages) and code(method, "setup") is not Method.setup:
        dead.append("setup")
    return dead


def check_stages(method: Method, stages: list[Stage], data: DataBundle, dataset: str) -> None:
    """Refuse, before anything trains, what would make a number untrustworthy."""
    dead = never_run(method, stages)
    if dead:
        shared = next(stage for stage in stages if stage.core_trained)
        raise ConfigError(f"method '{method.name}' overrides {', '.join(dead)}, which would never run: its stage "
                          f"'{shared.name}' is the shared CE stage, trained by the core's hooks alone (its numbers "
                          f"would be CE's under another name); give the stage a loss name of its own, e.g. "
                          f"recipe.representation(loss=\"{method.name}\")")
    if type(method).post_stage is not Method.post_stage and not any(stage.post for stage in stages):
        raise ConfigError(f"method '{method.name}' defines post_stage, but none of its stages declares a post-hoc "
                          f"step, so it would never run: add post=\"<name>\" to the Stage it follows, e.g. "
                          f"Stage(\"adjust\", trainable=\"none\", post=\"adjust\")")
    if type(method).test_logits is not Method.test_logits and stages[-1].core_trained:
        raise ConfigError(f"method '{method.name}' transforms the test logits (test_logits), which belong to its final "
                          f"stage, but that is the shared CE stage: add a stage of its own after it, e.g. "
                          f"Stage(\"adjust\", trainable=\"none\")")
    if data.val is None and method.tunes_on_validation():
        raise ConfigError(f"method '{method.name}' picks a value on validation data, but dataset "
                          f"'{dataset}' has no validation split apart from its test set "
                          f"({data.info.get('val', 'none')}): choosing on the test set is not allowed; fix the value "
                          f"with a method option instead (see `ltbench methods {method.name}`)")


def check_batch_size(stages: list[Stage], data: DataBundle, config: RunConfig) -> None:
    """A --batch-size larger than the training set makes every epoch one step, at a learning rate scaled up
    linearly for a batch that never fills (--batch-size 1000000 on digits-lt: x31,250): the run blows up or
    learns nothing, and looks finished. Refused, with the train-set size. (A recipe's own batch is left alone:
    on a tiny data set it only means one step per epoch, at the recipe's unscaled rate.)"""
    train_size = len(data.train)
    if config.batch_size is not None and config.batch_size > train_size and any(stage.epochs for stage in stages):
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the training set ({train_size:,} images of "
                          f"{config.dataset}): every epoch would be one step, at a learning rate scaled up for a batch "
                          f"that never fills; pass --batch-size {train_size} or less")


def check_world(plan: Plan, world: int) -> None:
    """Under torchrun: every trained stage's global batch must split evenly over the processes."""
    for stage in plan.stages:
        if stage.epochs and stage.optim.batch_size % world:
            batch = stage.optim.batch_size
            raise ConfigError(f"stage '{stage.name}': batch size {batch} does not split over {world} processes; pass "
                              f"--batch-size {max(world, batch // world * world)} (a multiple of {world})")


def default_run_name(config: RunConfig, plan: Plan) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    imbalance = plan.data.info.get("imbalance")
    imb = f"-if{imbalance:g}" if imbalance else ""
    return f"{config.method}-{config.dataset}{imb}-s{config.seed}-{stamp}"


def resolved_workers(config: RunConfig) -> int:
    from ..data.loaders import default_workers

    return default_workers() if config.workers is None else config.workers
