"""The stage runner: resolves a RunConfig, reuses cached stages, trains the rest, writes the run files.

Reliability (docs/reliability.md): a checkpoint at every epoch end, and on SIGTERM/SIGINT, makes a killed
run resumable (``--resume``), bit-exactly on CPU; a lock file per stage key makes concurrent runs train a
shared stage once; under torchrun the same code trains with DistributedDataParallel, rank 0 writing files.
"""
from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..config import (RunConfig, Stage, check_settings, defining_fields, get_recipe, resolved_later, scaled_optim,
                      stable_hash)
from ..data import DataBundle, build_data
from ..errors import ConfigError, LTBenchError, NotFoundError, RunExistsError, WriteError
from ..method import DataInfo, Method, StageState, create_method
from ..metrics import classification_metrics
from ..models import build_model
from ..results.store import (RunStore, _clean, append_jsonl, file_size, read_json, remove_temp_files, truncate,
                             write_error, write_json, write_npz, write_text)
from .checkpoint import (CheckpointError, capture_rng, checkpoint_dir, load_artifact,
                         load_checkpoint, load_state, restore_rng, save_artifact, save_checkpoint, save_state)
from .distributed import Distributed, init_from_env, sync_batchnorm
from .interrupt import GracefulStop, RunInterrupted, refuse_if_stopped
from .locks import StageLock, describe_holder
from .loop import EpochInterrupted, EpochProgress, LoopControl, evaluate, train_one_epoch
from .precision import resolve_device, resolve_precision
from .progress import Reporter
from .scalars import ScalarLog, check_available

LOCK_POLL_S = 0.5
SHARED_HOOKS = Method()  # the hooks of the shared CE stage: the core's, whatever the method

# RunConfig fields that define what a run computes: a resumed run takes them from its config.json, and
# any of them given again on the command line must agree (the others may differ: device, data root, ...)
DEFINING_FIELDS = defining_fields()  # RunConfig's field metadata (config.setting) says which
RESOLVED_LATER = resolved_later()


class OutOfMemory(LTBenchError):
    """The device ran out of memory; the message names the batch size and a smaller one."""


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


def data_spec(dataset: str, data: DataBundle) -> dict:
    """What identifies the training data of a stage: the LT subset rule, its seed, and a fingerprint of the
    actual images and labels (train and validation), so another copy of the data is another key."""
    return data.spec.key(data.fingerprint)  # data.spec.dataset is ``dataset``: build_data was given it


def stage_code(method: Method, stages: list[Stage]) -> list[str]:
    """Per stage, the hash of the code that trains it: the core's, plus the method's own source unless the
    stage is the shared CE stage (trained by the core's hooks alone)."""
    from ..fingerprint import core_code, method_code

    own = method_code(method)
    codes = []
    for index, stage in enumerate(stages):
        hooks = method.stage_hooks(index)
        extra = f"+{method_code(hooks)}" if hooks is not method else ""  # another method's hooks train it
        codes.append(core_code() if stage.shared else f"{core_code()}+{own}{extra}")
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


def _plugin_problems(config: RunConfig) -> list[str]:
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
        problems = _plugin_problems(config)
        if problems:  # the method may live in the file that failed: say so on the same line
            raise NotFoundError(f"{exc}; {'; '.join(problems)}") from None
        raise
    data = build_data(config.dataset, config.data_root, config.imbalance, config.profile, config.subset_seed,
                      config.val_per_class, download)
    source = data.source
    recipe = get_recipe(config.recipe or source.default_recipe)
    notices: list[str] = []  # plan-level facts, kept in config.json (plugin problems are warnings, printed apart)
    stage1 = scaled_optim(recipe.stage1, config.batch_size, config.lr, config.epochs, notices, "stage 1")
    stage2 = scaled_optim(recipe.stage2, config.batch_size, config.stage2_lr, config.stage2_epochs, notices, "stage 2")
    recipe = replace(recipe, stage1=stage1, stage2=stage2,  # an explicit stage-2 length applies to LWS too
                     lws_epochs=recipe.lws_epochs if config.stage2_epochs is None else None)
    stages = method.stages(recipe)
    _check_stages(method, stages, data, config.dataset)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    backbone = config.backbone or source.default_backbone
    keys = stage_keys(data_spec(config.dataset, data), backbone, config.pretrained, config.seed,
                      precision, stages, stage_code(method, stages))
    run_key = stable_hash({"method": config.method, "options": method.options, "final_stage": keys[-1]})
    return Plan(config, method, data, recipe.name, backbone, stages, keys, run_key, device, precision, notices)


def _check_stages(method: Method, stages: list[Stage], data: DataBundle, dataset: str) -> None:
    """Refuse, before anything trains, what would make a number untrustworthy."""
    if type(method).post_stage is not Method.post_stage and not any(stage.post for stage in stages):
        raise ConfigError(f"method '{method.name}' defines post_stage, but none of its stages declares a post-hoc "
                          f"step, so it would never run: add post=\"<name>\" to the Stage it follows, e.g. "
                          f"Stage(\"adjust\", trainable=\"none\", post=\"adjust\")")
    if type(method).test_logits is not Method.test_logits and stages[-1].shared:
        raise ConfigError(f"method '{method.name}' transforms the test logits (test_logits), which belong to its final "
                          f"stage, but that is the shared CE stage: add a stage of its own after it, e.g. "
                          f"Stage(\"adjust\", trainable=\"none\")")
    if data.val is None and method.tunes_on_validation():
        raise ConfigError(f"method '{method.name}' picks a value on validation data, but dataset "
                          f"'{dataset}' has no validation split apart from its test set "
                          f"({data.info.get('val', 'none')}): choosing on the test set is not allowed; fix the value "
                          f"with a method option instead (see `ltbench methods {method.name}`)")


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import timm
    import torchvision

    from .. import __version__

    return {"ltbench": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": np.__version__, "python": platform.python_version()}


def default_run_name(config: RunConfig, plan: Plan) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    imbalance = plan.data.info.get("imbalance")
    imb = f"-if{imbalance:g}" if imbalance else ""
    return f"{config.method}-{config.dataset}{imb}-s{config.seed}-{stamp}"


def resolved_workers(config: RunConfig) -> int:
    from ..data.loaders import default_workers

    return default_workers() if config.workers is None else config.workers


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class StageRunner:
    """Runs the stages of a plan in one run folder (on every DDP rank; rank 0 writes the files)."""

    def __init__(self, plan: Plan, store: RunStore, reporter: Reporter, dist: Distributed | None = None,
                 stop: GracefulStop | None = None):
        self.plan, self.store, self.reporter = plan, store, reporter
        self.dist = dist or Distributed()
        self.stop = stop or GracefulStop()  # never entered: never requested
        config, data = plan.config, plan.data
        self.device = plan.device
        self.loaders = {split: data.loader(split, self.device, resolved_workers(config))
                        for split in ("train", "val", "test") if getattr(data, split) is not None}
        counts = torch.as_tensor(data.class_counts, device=self.device)
        from ..data.longtail import shot_groups

        self.info = DataInfo(data.num_classes, counts, torch.as_tensor(shot_groups(data.class_counts), device=self.device),
                             self.device)
        _seed_all(config.seed)
        self.model = build_model(plan.backbone, data.num_classes, data.source.channels, config.pretrained)
        head = plan.method.classifier(self.model.backbone.num_features, data.num_classes)
        if head is not None:
            if plan.stages[0].shared:  # the shared stage is CE's, with the backbone's linear classifier
                raise ConfigError(f"method '{plan.method.name}' replaces the classifier (Method.classifier), but its "
                                  f"first stage is the shared CE stage, which keeps it: give it a stage of its own")
            self.model.replace_classifier(head)
        plan.method.setup(self.model, self.info)
        self.model.to(self.device).to(memory_format=torch.channels_last)
        if config.compile:  # compiles LTModel's forward in place: state_dict keys (artifacts, checkpoints) stay
            self.model.compile()
        self.stage_records: list[dict] = []
        self.last_test = None
        self.logit_transform = None  # Method.test_logits, from the final stage's end of training on
        self.run_name, self.run_dir = "", None
        self.resume: dict | None = None  # the checkpoint being resumed
        self.resume_path: Path | None = None
        self.last_checkpoint: Path | None = None
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self._stage_log_start = 0
        self._lock: StageLock | None = None
        self._artifact_state: dict | None = None
        self._announced: set = set()
        self.scalars: ScalarLog | None = None  # --tensorboard

    def attach(self, run_name: str, run_dir: Path) -> None:
        self.run_name, self.run_dir = run_name, run_dir
        if self.plan.config.tensorboard and self.dist.is_main:
            self.scalars = ScalarLog(run_dir / "tensorboard")

    def resume_from(self, checkpoint: dict, path: Path) -> None:
        self.resume, self.resume_path, self.last_checkpoint = checkpoint, path, path
        self.elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        self._stage_log_start = int(checkpoint.get("stage_log_start", 0))

    @property
    def log_path(self) -> Path:
        return self.run_dir / "epochs.jsonl"

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def resume_command(self) -> str:
        command = f"ltbench run --results {shlex.quote(str(self.store.root))} --run-name {shlex.quote(self.run_name)} --resume"
        return command + (f" --nproc {self.dist.world}" if self.dist.enabled else "")

    # helpers --------------------------------------------------------------------------------------
    def evaluate_split(self, split: str, features_only: bool = False):
        if split not in self.loaders:
            raise ConfigError(f"method '{self.plan.method.name}' asked for the {split} split, which "
                              f"{self.plan.config.dataset} does not have apart from its test set")
        loader, config = self.loaders[split], self.plan.config
        try:
            logits, labels, features = evaluate(self.model, loader, config.eval_batch_size, self.plan.precision,
                                                self.device, rank=self.dist.rank, world=self.dist.world)
        except torch.OutOfMemoryError:
            raise OutOfMemory(f"out of {self.device.type.upper()} memory while evaluating the {split} split at batch "
                              f"size {config.eval_batch_size}; try --eval-batch-size "
                              f"{max(config.eval_batch_size // 2, 1)}") from None
        if self.logit_transform is not None:
            logits = self.logit_transform(logits, self.info)
        if self.dist.enabled:
            logits, labels, features = (self.dist.gather_rows(t, len(loader)) for t in (logits, labels, features))
        return (features, labels) if features_only else (logits, labels, features)

    def _state(self, index: int, stage: Stage) -> StageState:
        return StageState(stage, index, self.info, self.model, epochs=stage.epochs,
                          evaluate=self.evaluate_split, log=self.reporter.log)

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer | None:
        groups = list(self.hooks(stage).trainable_parameters(self.model, stage))
        if not any(isinstance(group, dict) for group in groups):
            groups = [{"params": groups}] if groups else []
        for p in self.model.parameters():
            p.requires_grad_(False)
        for group in groups:
            for p in group["params"]:
                p.requires_grad_(True)
        if not groups or stage.epochs == 0:
            return None
        o = stage.optim
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)

    def _stage_metrics(self) -> dict:
        self.last_test = self.evaluate_split("test")  # the final report reuses it when this was the last stage
        logits, labels, features = self.last_test
        metrics, _ = classification_metrics(logits.cpu(), labels.cpu(), self.plan.data.class_counts, features.cpu())
        return metrics

    def final_test(self):
        """Test logits, labels and features of the finished model, evaluated once."""
        return self.last_test if self.last_test is not None else self.evaluate_split("test")

    def _interrupted(self, where: str) -> RunInterrupted:
        saved = f"checkpoint {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        return RunInterrupted(f"stopped by {self.stop.name} {where} ({saved}); continue with: {self.resume_command()}",
                              self.stop.signum or signal.SIGTERM)

    def _stop_agreed(self) -> bool:
        return self.dist.any(self.stop.requested)[0]

    # stages ---------------------------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        resume_index = self.resume["stage_index"] if self.resume else -1
        finished_records = json.loads(self.resume["records"]) if self.resume else []
        for index, (stage, key) in enumerate(zip(plan.stages, plan.keys)):
            self.last_test = None  # set only by a stage evaluated in this process
            if self._stop_agreed():
                raise self._interrupted(f"before stage {index + 1} ({stage.name})")
            state = self._state(index, stage)
            self.hooks(stage).on_stage_start(state)  # before anything is loaded: methods add extras here (LWS)
            if index < resume_index:  # finished before the checkpoint, which holds its weights and state
                self.stage_records.append(finished_records[index])
                continue
            resume = self.resume if index == resume_index else None
            if resume is None and self.dist.is_main:
                self._stage_log_start = file_size(self.log_path)
            if not stage.cached:
                record = self.train_stage(index, stage, key, state)
            elif self._claim(index, stage, key) == "reuse":
                record = self._reuse(index, stage, key, resuming=resume is not None)
            else:
                try:
                    record = self.train_stage(index, stage, key, state, resume)
                    record["metrics"] = self._stage_metrics()
                    if self.dist.is_main:  # exactly what training produced: post-hoc steps come after
                        save_artifact(self.store.stage_dir(key), self.model, self.hooks(stage),
                                      {"key": key, "stage": stage.spec(), "trained_by": self.run_name,
                                       "metrics": record["metrics"], "seconds": record["seconds"],
                                       "world_size": self.dist.world,
                                       "created": dt.datetime.now().isoformat(timespec="seconds")})
                finally:
                    if self._lock is not None:
                        self._lock.release()
                        self._lock = None
            transform = self._test_transform(index)
            if transform is not None:  # the final model's logits from here on, never an artifact's
                self.logit_transform, self.last_test = transform, None
            if stage.post:  # the stage's own post-hoc step, never part of an artifact
                record["post"] = plan.method.post_stage(state) or {}
            if stage.post or not stage.cached or transform is not None:
                record["metrics"] = self._stage_metrics()
            if self.scalars is not None:
                self.scalars.stage_end(stage.name, stage.epochs, record.get("metrics"))
            self.stage_records.append(record)

    def _test_transform(self, index: int):
        """``Method.test_logits`` after the final stage's training, when the method defines it."""
        method = self.plan.method
        if index != len(self.plan.stages) - 1 or type(method).test_logits is Method.test_logits:
            return None
        return method.test_logits

    def hooks(self, stage: Stage) -> Method:
        """Whose hooks train ``stage``: the shared CE stage is the core's alone (base ``Method``), so no
        method's code can make the artifact that cRT, LWS, tau-norm and NCM reuse differ from CE's; any
        other stage the method's ``stage_hooks`` (itself, unless it is built from other methods' stages)."""
        if stage.shared:
            return SHARED_HOOKS
        index = next(i for i, s in enumerate(self.plan.stages) if s is stage or s == stage)
        return self.plan.method.stage_hooks(index)

    def _claim(self, index: int, stage: Stage, key: str) -> str:
        """'reuse' when a complete artifact exists (waiting while another run trains it), else 'train'
        with the stage's lock held by rank 0. All ranks poll together, so no collective waits long."""
        while True:
            decision = self.dist.on_main(lambda: self._try_claim(index, stage, key))
            if decision != "wait":
                return decision
            time.sleep(LOCK_POLL_S)
            if self._stop_agreed():
                raise self._interrupted(f"while waiting for stage {index + 1} ({stage.name})")

    def _try_claim(self, index: int, stage: Stage, key: str) -> str:
        label = f"stage {index + 1} ({stage.name})"
        if self._reusable(key) and self._readable_artifact(key, label):
            return "reuse"
        lock = StageLock(self.store.stage_lock(key), owner=self.run_name)
        if lock.try_acquire():
            if self.store.has_stage(key):
                if self._reusable(key) and self._readable_artifact(key, label):  # finished between our looks
                    lock.release()
                    return "reuse"
                (self.store.stage_dir(key) / "meta.json").unlink(missing_ok=True)  # corrupt or --retrain
            self._lock = lock
            return "train"
        held = lock.read()
        if held is None:  # released meanwhile
            return "wait"
        raw, info, age = held
        reason = lock.stale_reason(info, age)
        if reason:
            self.reporter.log(f"{label}: removing the stale lock of {describe_holder(info)}: {reason}")
            lock.break_stale(raw)
        elif key not in self._announced:
            self._announced.add(key)
            self.reporter.log(f"{label}: waiting for {describe_holder(info)}, which is training it ({lock.path})")
        return "wait"

    def _reusable(self, key: str) -> bool:
        """A complete artifact, not older than --retrain's start (the artifacts this run trains are newer)."""
        if not self.store.has_stage(key):
            return False
        before = self.plan.config.retrain_before
        return before is None or (self.store.stage_dir(key) / "meta.json").stat().st_mtime >= before

    def _readable_artifact(self, key: str, label: str) -> bool:
        path = self.store.stage_dir(key) / "model.pt"
        try:
            self._artifact_state = load_state(path, self.device)
            return True
        except CheckpointError as exc:
            if ("corrupt", key) not in self._announced:
                self._announced.add(("corrupt", key))
                self.reporter.warn(f"stage artifact {exc}; retraining {label}")
            return False

    def _reuse(self, index: int, stage: Stage, key: str, resuming: bool) -> dict:
        folder = self.store.stage_dir(key)
        state, self._artifact_state = self._artifact_state, None
        meta = load_artifact(folder, self.model, self.hooks(stage), self.device, state if self.dist.is_main else None)
        own = meta.get("trained_by") == self.run_name  # this run finished it before it was interrupted
        if own:
            self.reporter.log(f"stage {index + 1} ({stage.name}): finished before the interruption ({key})")
        else:
            self.reporter.log(f"stage {index + 1} ({stage.name}): reused {key} (trained by run "
                              f"'{meta.get('trained_by')}')")
            if resuming and self.dist.is_main:  # another run finished the stage this one was training
                truncate(self.log_path, self._stage_log_start)
        record = {"name": stage.name, "key": key, "reused": not own, "trained_by": meta.get("trained_by"),
                  "metrics": meta.get("metrics"), "post": {}}
        if own:
            record["seconds"] = meta.get("seconds")
        record["spec"] = stage.spec()
        return record

    def _control(self, stage: Stage, optimizer: torch.optim.Optimizer) -> LoopControl:
        dist = self.dist
        control = LoopControl(dist.rank, dist.world, any_rank=dist.any,
                              stop_requested=lambda: self.stop.requested, sum_over_ranks=self._sum_over_ranks)
        if dist.enabled:
            sync_batchnorm(self.model, self.device)  # per stage: methods may have added modules since
            if stage.trainable == "all":
                from torch.nn.parallel import DistributedDataParallel

                # every trainable parameter must get a gradient in every step (find_unused_parameters off:
                # methods such as DaSL use extras outside forward(), which that search would miss)
                control.ddp_model = DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            else:  # a classifier or a few scales: one flat all-reduce per step, no wrapper
                params = [p for group in optimizer.param_groups for p in group["params"]]
                dist.broadcast_tensors(params)
                control.reduce_gradients = lambda: dist.average_gradients(params)
        return control

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(tensor)
        return tensor

    def train_stage(self, index: int, stage: Stage, key: str, state: StageState, resume: dict | None = None) -> dict:
        plan = self.plan
        if stage.shared and len(self.model.extras):  # they would land in the artifact every CE run reuses
            raise ConfigError(f"method '{plan.method.name}' adds {', '.join(self.model.extras)} to the model before "
                              f"the shared CE stage '{stage.name}': add them in on_stage_start of the stage that "
                              f"uses them (as LWS does)")
        seed = int(key[:8], 16)  # a stage starts the same whether earlier stages were trained, reused or resumed
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        generator = torch.Generator(device=self.device).manual_seed(int(key[8:12], 16))
        if stage.reinit_classifier:
            self.model.reset_classifier(plan.data.num_classes)
            self.model.to(self.device)
        optimizer = self._optimizer(stage)
        scaler = torch.amp.GradScaler("cuda") if plan.precision == "fp16" else None
        started = time.perf_counter()
        start_epoch, partial = 0, None
        if resume is not None:
            start_epoch, partial = self._restore(resume, optimizer, scaler, generator)
            started -= float(resume.get("stage_seconds", 0.0))
        if optimizer is not None:
            self._train_epochs(index, stage, key, state, optimizer, scaler, generator, start_epoch, partial, resume,
                               started)
        elif resume is None:
            self.reporter.log(f"stage {index + 1}/{len(plan.stages)} ({stage.name}): no training")
        seconds = time.perf_counter() - started
        return {"name": stage.name, "key": key, "reused": False, "trained_by": self.run_name,
                "metrics": None, "post": {}, "seconds": seconds, "spec": stage.spec()}

    def _train_epochs(self, index, stage, key, state, optimizer, scaler, generator, start_epoch, partial, resume,
                      started) -> None:
        plan, dist, hooks = self.plan, self.dist, self.hooks(stage)
        train_loader = self.loaders["train"]
        steps = train_loader.num_batches(stage.optim.batch_size // dist.world, dist.world)
        control = self._control(stage, optimizer)
        try:
            with self.reporter.stage(index, len(plan.stages), stage, key, steps, start_epoch,
                                     partial.step if partial else 0) as bar:
                control.on_step = bar.step
                for epoch in range(start_epoch, stage.epochs):
                    state.epoch, state.step, state.steps_per_epoch = epoch, 0, steps
                    hooks.on_epoch_start(state)
                    mid_epoch = partial if epoch == start_epoch else None
                    if mid_epoch is not None:  # the hook ran again for this epoch; now state and RNGs as saved
                        hooks.load_state_dict(self._method_state(resume))
                        restore_rng(resume["rng"])
                        generator.set_state(resume["epoch_generator"])
                    epoch_generator = generator.get_state()
                    try:
                        stats = train_one_epoch(self.model, hooks, train_loader, optimizer, state, generator,
                                                plan.precision, scaler, control, mid_epoch)
                    except EpochInterrupted as stop:
                        self._checkpoint(index, key, epoch, optimizer, scaler, generator, started, stop.progress,
                                         epoch_generator)
                        raise self._interrupted(f"in stage {index + 1} ({stage.name}), epoch {epoch + 1}, after "
                                                f"step {stop.progress.step}") from None
                    hooks.on_epoch_end(state)
                    bar.epoch_done(epoch, stats)
                    dist.broadcast_tensors(list(self.model.buffers()))  # BN running statistics: rank 0's
                    if dist.is_main:
                        record = {"stage": stage.name, "stage_index": index, "epoch": epoch + 1, **stats}
                        append_jsonl(self.log_path, record)
                        if self.scalars is not None:
                            self.scalars.epoch(record)
                    self._checkpoint(index, key, epoch + 1, optimizer, scaler, generator, started)
                    if epoch + 1 < stage.epochs and self._stop_agreed():
                        raise self._interrupted(f"in stage {index + 1} ({stage.name}) after epoch {epoch + 1}")
        except torch.OutOfMemoryError:
            batch = stage.optim.batch_size
            per_rank = f" ({batch // dist.world} per process)" if dist.enabled else ""
            raise OutOfMemory(f"out of {self.device.type.upper()} memory in stage {index + 1} ({stage.name}) at batch "
                              f"size {batch}{per_rank}; try --batch-size {max(batch // 2, 1)} (the learning rate "
                              f"scales linearly with it)") from None
        finally:
            control.ddp_model = None  # drops DDP's gradient hooks before the next stage builds its own

    # checkpoints ----------------------------------------------------------------------------------
    def _checkpoint(self, index: int, key: str, epochs_done: int, optimizer, scaler, generator, stage_started: float,
                    progress: EpochProgress | None = None, epoch_generator: torch.Tensor | None = None) -> None:
        """Everything needed to continue exactly from here (rank 0 writes; the others send their method state)."""
        method_state = self.hooks(self.plan.stages[index]).state_dict()
        partial = None
        if progress is not None:  # this rank's sums of the interrupted epoch so far
            partial = {"loss_sum": progress.loss_sum, "correct": progress.correct, "seen": progress.seen,
                       "seconds": progress.seconds}
        by_rank = None
        if self.dist.enabled:  # per-rank accumulators (e.g. DaSL's class sums, the epoch's loss) differ
            by_rank = [None] * self.dist.world
            torch.distributed.all_gather_object(by_rank, _to_cpu({"method": method_state, "partial": partial}))
        if self.dist.is_main:
            self.last_checkpoint = save_checkpoint(self.run_dir, {
                "run_name": self.run_name, "run_key": self.plan.run_key, "stage_index": index, "stage_key": key,
                "epoch": epochs_done, "step": progress.step if progress else 0,
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "method": method_state, "method_by_rank": [r["method"] for r in by_rank] if by_rank else None,
                "partial_by_rank": [r["partial"] for r in by_rank] if by_rank else None,
                "rng": capture_rng(generator), "epoch_generator": epoch_generator, "partial": partial,
                "records": json.dumps(_clean(self.stage_records)),
                "epochs_log_bytes": file_size(self.log_path), "stage_log_start": self._stage_log_start,
                "stage_seconds": time.perf_counter() - stage_started, "elapsed_s": self.elapsed(),
                "world_size": self.dist.world, "saved": dt.datetime.now().isoformat(timespec="seconds"),
            })
        if progress is not None:
            self.dist.barrier()  # interrupted: leave together, once the file is complete

    def _method_state(self, checkpoint: dict) -> dict:
        by_rank = checkpoint.get("method_by_rank")
        if by_rank and len(by_rank) == self.dist.world:
            return by_rank[self.dist.rank]
        return checkpoint["method"]

    def _restore(self, checkpoint: dict, optimizer, scaler, generator) -> tuple[int, EpochProgress | None]:
        """Load a checkpoint of the current stage. Returns (epochs done, progress of an interrupted epoch)."""
        try:
            self.model.load_state_dict(checkpoint["model"], strict=True)
            if optimizer is not None and checkpoint.get("optimizer") is not None:
                optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint {self.resume_path} does not fit this model or optimizer ({first}); "
                                  f"the method's code changed since the run started: start a new run") from None
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        step = int(checkpoint.get("step", 0))
        if step == 0:
            self.hooks(self.plan.stages[checkpoint["stage_index"]]).load_state_dict(self._method_state(checkpoint))
            restore_rng(checkpoint["rng"], generator)
            return int(checkpoint["epoch"]), None
        partial = checkpoint["partial"]  # rank 0's own sums
        by_rank = checkpoint.get("partial_by_rank")
        if by_rank and len(by_rank) == self.dist.world:  # each rank continues its own sums
            partial = by_rank[self.dist.rank]
        elif not self.dist.is_main:  # another world size: rank 0 carries the sums, the others start at zero
            return int(checkpoint["epoch"]), EpochProgress(step, seconds=float(partial["seconds"]))
        elif by_rank:
            partial = {**partial, **{name: sum(r[name] for r in by_rank) for name in ("loss_sum", "correct", "seen")}}
        progress = EpochProgress(step, partial["loss_sum"], partial["correct"], int(partial["seen"]),
                                 float(partial["seconds"]))
        return int(checkpoint["epoch"]), progress


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# resume -------------------------------------------------------------------------------------------
def resume_config(config: RunConfig, explicit: set[str] | None = None) -> tuple[RunConfig, dict]:
    """The config of the unfinished run ``config.run_name``, from its config.json.

    ``explicit``: the fields the user gave (CLI); they must agree with the run's. None (library callers):
    every defining field of ``config`` must agree, where None / 'auto' agree with what they resolved to.
    """
    name = config.run_name
    if not name:
        raise ConfigError("--resume needs --run-name NAME: the unfinished run (folder OUT/runs/NAME) to continue")
    store = RunStore(config.out)
    run_dir = store.run_dir(name)
    if not run_dir.is_dir():
        unfinished = sorted(p.name for p in store.runs.glob("*") if p.is_dir() and not (p / "metrics.json").exists())
        close = difflib.get_close_matches(name, unfinished, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFoundError(f"nothing to resume: there is no run '{name}' in {store.runs}{hint} (start it without "
                            f"--resume)")
    if (run_dir / "metrics.json").exists():
        raise ConfigError(f"nothing to resume: run '{name}' already finished ({run_dir / 'metrics.json'} exists); "
                          f"start a new run with another --run-name")
    try:
        saved = read_json(run_dir / "config.json")
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError):
        raise CheckpointError(f"cannot resume run '{name}': {run_dir / 'config.json'} is missing or unreadable (the "
                              f"run stopped before it started); delete {run_dir} and start the run again") from None
    compared = DEFINING_FIELDS if explicit is None else [f for f in DEFINING_FIELDS if f in explicit]
    defaults = RunConfig()
    differences = []
    for name_ in compared:
        given, kept = getattr(config, name_), saved.get(name_, getattr(defaults, name_))
        if name_ == "method_options":
            if explicit is None and not given:
                continue
            method = saved.get("method", config.method)
            given = create_method(method, given, config.plugins or saved.get("plugins")).options
        if given == kept or (name_ in RESOLVED_LATER and given == RESOLVED_LATER[name_]):
            continue
        differences.append(f"{name_} {given!r} (the run has {'the default' if kept is None else repr(kept)})")
    if differences:
        raise ConfigError(f"--resume: {'; '.join(differences)}: a resumed run keeps its settings; leave them out "
                          f"(they come from {run_dir / 'config.json'}) or start a new run")
    kept = {f.name: saved.get(f.name, getattr(defaults, f.name)) for f in fields(RunConfig) if f.name in DEFINING_FIELDS}
    resumed = replace(config, **kept, resume=True, data_root=config.data_root or saved.get("data_root"),
                      plugins=config.plugins or saved.get("plugins") or [])
    return resumed, saved


def _check_plan_unchanged(plan: Plan, saved: dict, run_dir: Path) -> None:
    old = [s.get("key") for s in saved.get("stages", [])]
    if plan.run_key != saved.get("run_key") or plan.keys != old:
        raise ConfigError(f"cannot resume run '{run_dir.name}': its plan changed since it started (stage keys "
                          f"{old} -> {plan.keys}): the code, the data or a plugin changed; start a new run")


def _check_world(plan: Plan, world: int) -> None:
    for stage in plan.stages:
        if stage.epochs and stage.optim.batch_size % world:
            batch = stage.optim.batch_size
            raise ConfigError(f"stage '{stage.name}': batch size {batch} does not split over {world} processes; pass "
                              f"--batch-size {max(world, batch // world * world)} (a multiple of {world})")


RUN_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems: longer names fail in mkdir


def _check_run_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or not name.isprintable():
        raise ConfigError(f"--run-name {name!r}: a run name is one folder name (no '/', no control characters), "
                          f"e.g. crt-seed0")
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if size > RUN_NAME_BYTES:
        raise ConfigError(f"--run-name is {size} bytes long ({name[:24]}...): a folder name may have at most "
                          f"{RUN_NAME_BYTES}; choose a shorter one")


# execute ------------------------------------------------------------------------------------------
def execute(config: RunConfig, reporter: Reporter | None = None, download: bool = False,
            explicit: set[str] | None = None) -> dict:
    """Plan, train and write one run (or continue one: ``config.resume``). Returns its metrics (also in
    <out>/runs/<name>/metrics.json). Under torchrun every rank calls this; rank 0 writes and prints."""
    reporter = reporter or Reporter()
    refuse_if_stopped()
    dist = init_from_env(config.device)
    if not dist.is_main:
        reporter = Reporter(reporter.console, silent=True)
    try:
        with GracefulStop() as stop:
            return _execute(config, reporter, download, explicit, dist, stop)
    except LTBenchError as exc:
        if dist.enabled and not dist.is_main:
            if isinstance(exc, OutOfMemory):  # specific to this rank's device: say which
                exc.args = (f"rank {dist.rank}: {exc}",)
            else:  # every rank raised it: rank 0 prints it
                exc.reported_on_rank0 = True
        raise
    finally:
        dist.close()


def _execute(config: RunConfig, reporter: Reporter, download: bool, explicit: set[str] | None,
             dist: Distributed, stop: GracefulStop) -> dict:
    saved = None
    if config.run_name is not None:
        _check_run_name(config.run_name)
    if config.resume:
        config, saved = resume_config(config, explicit)
    if config.tensorboard:
        check_available()
    reporter.log(f"reading {config.dataset} and planning the stages ...")
    plan = plan_run(config, download)
    if dist.enabled:
        plan.device = dist.device
        _check_world(plan, dist.world)
    store = RunStore(config.out)
    if saved is not None:
        _check_plan_unchanged(plan, saved, store.run_dir(config.run_name))
    for problem in _plugin_problems(config):
        reporter.warn(problem)
    for notice in plan.notices:
        reporter.log(notice)
    reporter.log(f"building {plan.backbone} ...")
    runner = StageRunner(plan, store, reporter, dist, stop)  # builds the model: a bad backbone fails before any write
    run_lock: list[StageLock] = []  # rank 0 holds the run folder's lock while the run lives
    try:
        return _run(config, plan, store, runner, saved, reporter, dist, run_lock)
    finally:
        for lock in run_lock:
            lock.release()


def _run(config: RunConfig, plan: Plan, store: RunStore, runner: StageRunner, saved: dict | None, reporter: Reporter,
         dist: Distributed, run_lock: list) -> dict:
    if saved is None:
        run_name = dist.on_main(lambda: _create_run(config, plan, store, dist.world, run_lock))
        run_dir = store.run_dir(run_name)
        runner.attach(run_name, run_dir)
        reporter.log(f"run '{run_name}': {config.method} on {config.dataset} ({_describe(plan)}) -> {run_dir}")
    else:
        run_name = config.run_name
        run_dir = store.run_dir(run_name)
        runner.attach(run_name, run_dir)
        found = dist.on_main(lambda: _open_resume(run_dir, plan, reporter, run_lock))
        if found is not None:
            path = Path(found)
            checkpoint = load_state(path, "cpu")
            runner.resume_from(checkpoint, path)
            stage = plan.stages[checkpoint["stage_index"]]
            where = f"epoch {checkpoint['epoch']} of {stage.epochs} done" + (
                f", step {checkpoint['step']} of epoch {checkpoint['epoch'] + 1}" if checkpoint["step"] else "")
            reporter.log(f"run '{run_name}': resuming from {path} (stage {checkpoint['stage_index'] + 1} "
                         f"({stage.name}), {where})")
        else:
            reporter.log(f"run '{run_name}': no checkpoint yet, starting it over in {run_dir}")
    try:
        metrics = _train_and_finish(plan, runner, run_name, run_dir, dist, run_lock)
    except WriteError as exc:  # disk full, say: the checkpoints written so far are intact
        kept = f"the last checkpoint {runner.last_checkpoint} is kept" if runner.last_checkpoint else \
            "no checkpoint was saved yet"
        raise WriteError(f"{exc}; {kept}; then continue with: {runner.resume_command()}") from None
    dist.barrier()
    reporter.summary(config.method, plan, metrics)
    return metrics


def _train_and_finish(plan: Plan, runner: StageRunner, run_name: str, run_dir: Path, dist: Distributed,
                      run_lock: list) -> dict:
    """Train the stages, evaluate, and (rank 0) write the run's result files, metrics.json last."""
    data = plan.data
    runner.run()
    logits, labels, features = runner.final_test()
    metrics, per_class = classification_metrics(logits.cpu(), labels.cpu(), data.class_counts, features.cpu())
    metrics.update(stages=runner.stage_records, wall_time_s=runner.elapsed(), run_name=run_name,
                   run_key=plan.run_key, status="complete", world_size=dist.world)
    if runner.resume is not None:
        checkpoint = runner.resume
        metrics["resumed_from"] = {"checkpoint": runner.resume_path.name, "stage": checkpoint["stage_index"] + 1,
                                   "epoch": checkpoint["epoch"], "step": checkpoint["step"]}
    if dist.is_main:
        write_npz(run_dir / "test_logits.npz", logits=logits.cpu().numpy().astype(np.float32),
                  labels=labels.cpu().numpy().astype(np.int64))
        header = "class,train_count,test_count,correct,acc,group\n"
        write_text(run_dir / "per_class.csv", header + "".join(
            f"{r['class']},{r['train_count']},{r['test_count']},{r['correct']},{r['acc']:.4f},{r['group']}\n"
            for r in per_class))
        save_state(run_dir / "model.pt", {"model": runner.model.state_dict(), "method": plan.method.state_dict()})
        write_json(run_dir / "metrics.json", metrics)  # written last: its presence marks a finished run
        if runner.scalars is not None:
            runner.scalars.close()
        shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)  # model.pt is the final state
        for lock in run_lock:
            lock.release()
    return metrics


RUN_LOCK = ".lock"  # in the run folder: held while a process runs it (so a resume never joins a live run)


def _create_run(config: RunConfig, plan: Plan, store: RunStore, world: int, run_lock: list) -> str:
    """Rank 0: the run folder with config.json, an empty epochs.jsonl and the subset. Every check that
    can fail comes before the first write, so a refused run leaves the results folder as it was."""
    run_name = config.run_name or default_run_name(config, plan)
    if store.run_dir(run_name).exists():
        raise RunExistsError(f"run '{run_name}' already exists in {store.runs}; choose another --run-name (or add "
                             f"--resume to continue it if it did not finish)")
    store.check_writable()
    run_dir = store.create_run(run_name)
    lock = StageLock(run_dir / RUN_LOCK, owner=run_name)
    lock.try_acquire()  # the folder is new and ours (exclusive mkdir)
    run_lock.append(lock)
    data = plan.data
    try:
        write_json(run_dir / "config.json", resolved_config(plan, run_name, world))
        try:
            (run_dir / "epochs.jsonl").touch()  # stays empty when every stage is reused or post-hoc
        except OSError as exc:
            raise write_error(run_dir / "epochs.jsonl", exc) from None
        if data.train_indices is not None:
            write_npz(run_dir / "subset.npz", train_indices=data.train_indices, val_indices=data.val_indices,
                      class_counts=data.class_counts)
    except WriteError:  # a run folder without its config.json could be neither resumed nor read: remove it
        lock.release()
        run_lock.remove(lock)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_name


def _lock_run(run_dir: Path, run_lock: list) -> None:
    lock = StageLock(run_dir / RUN_LOCK, owner=run_dir.name)
    while not lock.try_acquire():
        held = lock.read()
        if held is None:
            continue
        raw, info, age = held
        if lock.stale_reason(info, age) is None:
            raise RunExistsError(f"run '{run_dir.name}' is still running ({describe_holder(info)}); let it finish or "
                                 f"stop it before --resume")
        lock.break_stale(raw)
    run_lock.append(lock)


def _open_resume(run_dir: Path, plan: Plan, reporter: Reporter, run_lock: list) -> str | None:
    """Rank 0: the checkpoint to resume from (falling back to prev.pt), with epochs.jsonl cut back to it."""
    _lock_run(run_dir, run_lock)
    remove_temp_files(run_dir)
    found = load_checkpoint(run_dir, "cpu", warn=reporter.warn)
    if found is None:
        truncate(run_dir / "epochs.jsonl", 0)
        return None
    checkpoint, path = found
    if checkpoint.get("run_key") != plan.run_key:
        raise CheckpointError(f"checkpoint {path} belongs to another run (run key {checkpoint.get('run_key')}, this "
                              f"plan has {plan.run_key}); start a new run")
    truncate(run_dir / "epochs.jsonl", int(checkpoint["epochs_log_bytes"]))
    return str(path)


def _describe(plan: Plan) -> str:
    info = plan.data.info
    parts = [f"IF {info['imbalance']:g}" if info.get("imbalance") else "published LT split",
             f"train {info['train_size']}", f"backbone {plan.backbone}", f"recipe {plan.recipe_name}",
             f"seed {plan.config.seed}", f"{plan.device.type} {plan.precision}"]
    return ", ".join(parts)


def resolved_config(plan: Plan, run_name: str, world: int = 1) -> dict:
    config = plan.config.to_dict()
    data_info = {k: v for k, v in plan.data.info.items() if k != "class_names"}
    config.update(
        run_name=run_name, run_key=plan.run_key, method_options=plan.method.options,
        method_defaults=dict(type(plan.method).defaults),  # tables label changed options without importing it
        imbalance=plan.data.info.get("imbalance"), backbone=plan.backbone, recipe=plan.recipe_name,
        device=str(plan.device), precision=plan.precision, world_size=world, workers=resolved_workers(plan.config),
        stages=[{"name": s.name, "key": k, **s.spec()} for s, k in zip(plan.stages, plan.keys)],
        data=data_info, class_counts=plan.data.class_counts.tolist(), notices=plan.notices,
        reported_epoch="last",  # the model after the last epoch; never a best epoch chosen on the test set
        versions=_versions(), git_commit=_git_commit(), host=socket.gethostname(), command=sys.argv,
        created=dt.datetime.now().isoformat(timespec="seconds"), torch_threads=torch.get_num_threads(),
    )
    return config
