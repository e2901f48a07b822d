"""Training one stage of one model: the one set-up (seed, model, trainable parameters, optimizer, stage
state, hooks) and the epochs, with DDP, checkpoint capture and exact restore.

The runner, the benchmarks and the tests all go through ``build_stage_model``, ``Trainer.begin_stage``
and ``Trainer.fit_stage``, so a benchmark measures the code users run.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..config import Stage
from ..errors import ConfigError, LTBenchError
from ..method import DataInfo, Method, StageState
from ..models import build_model
from ..models.heads import LTModel
from .checkpoint import CheckpointError, ResumePoint, capture_rng, restore_rng
from .distributed import Distributed, sync_batchnorm
from .interrupt import GracefulStop
from .loop import EpochInterrupted, EpochProgress, LoopControl, evaluate, train_one_epoch
from .progress import Reporter


class OutOfMemory(LTBenchError):
    """The device ran out of memory; the message names the batch size and a smaller one."""


class StageRecorder(Protocol):
    """What a run does with a stage in training (the runner; benchmarks and tests pass none)."""

    def epoch_done(self, record: dict) -> None:
        """Rank 0: one finished epoch's log line."""

    def save_checkpoint(self, stage_part: dict) -> None:
        """Rank 0: write a checkpoint holding ``stage_part`` (model, optimizer, RNGs, ...) and the run's state."""

    def interrupted(self, where: str) -> Exception:
        """The exception that ends the run after a stop was requested ``where``."""


@dataclass
class StageResult:
    """A trained stage: its training seconds and one stats dict per epoch trained in this process."""

    seconds: float
    epochs: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_stage_model(method: Method, backbone: str, in_chans: int, info: DataInfo, seed: int,
                      pretrained: bool = False, compile: bool = False, first_stage_core_trained: bool = False) -> LTModel:
    """The run's model: seeded, the method's classifier and ``setup``, on the device, channels_last. When the
    first stage is core-trained, the model is the core's alone: ``setup`` waits for the method's first own
    stage (``Trainer.setup_method``), so no method's code touches what the shared stage trains or loads."""
    seed_everything(seed)
    model = build_model(backbone, info.num_classes, in_chans, pretrained)
    head = method.classifier(model.backbone.num_features, info.num_classes)
    if head is not None:
        if first_stage_core_trained:  # the shared stage is CE's, with the backbone's linear classifier
            raise ConfigError(f"method '{method.name}' replaces the classifier (Method.classifier), but its "
                              f"first stage is the shared CE stage, which keeps it: give it a stage of its own")
        model.replace_classifier(head)
    if not first_stage_core_trained:
        method.setup(model, info)
    model.to(info.device).to(memory_format=torch.channels_last)
    if compile:  # compiles LTModel's forward in place: state_dict keys (artifacts, checkpoints) stay
        model.compile()
    return model


class Trainer:
    """Trains stages of ``model`` on ``loaders["train"]`` (on every DDP rank) and evaluates it."""

    def __init__(self, model: LTModel, info: DataInfo, loaders: dict, precision: str, *, eval_batch_size: int = 256,
                 dist: Distributed | None = None, stop: GracefulStop | None = None, reporter: Reporter | None = None,
                 stages_total: int = 1, names: tuple[str, str] = ("", ""), test_every_epoch: bool = False):
        self.model, self.info, self.loaders, self.precision = model, info, loaders, precision
        self.test_every_epoch = test_every_epoch  # --log-test-acc: a log line per epoch, never a choice
        self.device = info.device
        self.eval_batch_size = eval_batch_size
        self.dist = dist or Distributed()
        self.stop = stop or GracefulStop()  # never entered: never requested
        self.reporter = reporter or Reporter(silent=True)
        self.stages_total = stages_total
        self.method_name, self.dataset = names  # for messages
        self.logit_transform = None  # Method.test_logits, from the final stage's end of training on

    def evaluate_split(self, split: str, features_only: bool = False):
        if split not in self.loaders:
            raise ConfigError(f"method '{self.method_name}' asked for the {split} split, which "
                              f"{self.dataset} does not have apart from its test set")
        loader, batch = self.loaders[split], self.eval_batch_size
        try:
            logits, labels, features = evaluate(self.model, loader, batch, self.precision, self.device,
                                                rank=self.dist.rank, world=self.dist.world)
        except torch.OutOfMemoryError:
            raise OutOfMemory(f"out of {self.device.type.upper()} memory while evaluating the {split} split at batch "
                              f"size {batch}; try --eval-batch-size {max(batch // 2, 1)}") from None
        if self.logit_transform is not None:
            logits = self.logit_transform(logits, self.info)
        if self.dist.enabled:
            logits, labels, features = (self.dist.gather_rows(t, len(loader)) for t in (logits, labels, features))
        return (features, labels) if features_only else (logits, labels, features)

    def setup_method(self, method: Method, seed: int) -> None:
        """``Method.setup`` of a run that opens with core-trained stages, called before the method's first own
        stage (after the shared ones are trained or loaded): torch seeded with the run's ``seed`` as
        ``build_stage_model`` seeds it (DaSL reads it), and the modules it adds moved to the device."""
        if type(method).setup is Method.setup:
            return
        seed_everything(seed)
        method.setup(self.model, self.info)
        self.model.to(self.device).to(memory_format=torch.channels_last)

    def begin_stage(self, index: int, stage: Stage, hooks: Method) -> StageState:
        """The stage's state, after ``hooks.on_stage_start`` (methods add extras there, e.g. LWS)."""
        state = StageState(stage, index, self.info, self.model, epochs=stage.epochs,
                           evaluate=self.evaluate_split, log=self.reporter.log)
        hooks.on_stage_start(state)
        return state

    def stop_agreed(self, epochs_ahead: float = 1.0, stage_key: str | None = None) -> bool:
        """At a boundary, on every rank alike: a signal arrived on some rank, or the next ``epochs_ahead``
        epochs (of stage ``stage_key``) would end after the time limit on some rank."""
        by_signal, by_time = self.dist.any(self.stop.requested, self.stop.time_up(epochs_ahead, stage_key))
        if by_time and not by_signal:
            self.stop.timed_out = True
        return by_signal or by_time

    def test_accuracy(self) -> float:
        """Top-1 (%) on the test set now (--log-test-acc). Every random generator, each module's train/eval
        mode and the BN statistics (evaluation runs in eval mode) are left as they were, so the numbers of
        the run do not change; the value is logged, never used for a choice."""
        modes = [(module, module.training) for module in self.model.modules()]
        rng = capture_rng()
        try:
            logits, labels, _ = self.evaluate_split("test")
        finally:
            restore_rng(rng)
            for module, training in modes:
                module.training = training
        return 100.0 * int((logits.argmax(1) == labels).sum()) / max(len(labels), 1)

    def fit_stage(self, state: StageState, key: str, seed: int, hooks: Method, resume: ResumePoint | None = None,
                  recorder: StageRecorder | None = None) -> StageResult:
        """Train ``state.stage`` (cache key ``key``) with ``hooks`` (from ``resume`` when given), seeded from
        ``seed`` (``Plan.seeds``), so a stage starts the same whether earlier stages were trained, reused or resumed. ``recorder`` (the runner)
        logs each epoch and saves checkpoints; without one (benchmarks, tests) nothing is written."""
        stage, index = state.stage, state.stage_index
        if stage.core_trained and len(self.model.extras):  # they would land in the artifact every CE run reuses
            raise ConfigError(f"method '{self.method_name}' adds {', '.join(self.model.extras)} to the model before "
                              f"the shared CE stage '{stage.name}': add them in on_stage_start of the stage that "
                              f"uses them (as LWS does)")
        seed_everything(seed >> 16)
        generator = torch.Generator(device=self.device).manual_seed(seed & 0xFFFF)
        if stage.reinit_classifier:
            self.model.reset_classifier(self.info.num_classes)
            self.model.to(self.device)
        optimizer = self._optimizer(stage, hooks)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        started = time.perf_counter()
        start_epoch, partial = 0, None
        if resume is not None:
            start_epoch, partial = self._restore(resume, hooks, optimizer, scaler, generator)
            started -= float(resume.checkpoint.get("stage_seconds", 0.0))
        result = StageResult(0.0)
        if optimizer is not None:
            self._train_epochs(state, key, hooks, optimizer, scaler, generator, start_epoch, partial, resume,
                               started, result, recorder)
        elif resume is None:
            self.reporter.log(f"stage {index + 1}/{self.stages_total} ({stage.name}): no training")
        result.seconds = time.perf_counter() - started
        return result

    def _optimizer(self, stage: Stage, hooks: Method) -> torch.optim.Optimizer | None:
        """Only the stage's trainable parameters require gradients; SGD over them (None: nothing to train)."""
        groups = list(hooks.trainable_parameters(self.model, stage))
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

    def _loop_control(self, stage: Stage, optimizer: torch.optim.Optimizer) -> LoopControl:
        """Distribution and interruption for the loop: DDP for backbone stages, a flat all-reduce otherwise."""
        dist = self.dist
        control = LoopControl(dist.rank, dist.world, any_rank=dist.any,
                              stop_requested=lambda: self.stop.requested, sum_over_ranks=_sum_over_ranks)
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

    def _train_epochs(self, state, key, hooks, optimizer, scaler, generator, start_epoch, partial, resume, started,
                      result: StageResult, recorder: StageRecorder | None) -> None:
        stage, index, dist = state.stage, state.stage_index, self.dist
        train_loader = self.loaders["train"]
        steps = train_loader.num_batches(stage.optim.batch_size // dist.world, dist.world)
        control = self._loop_control(stage, optimizer)
        budget = self.stop.budget  # --time-limit: each whole epoch (with its checkpoint) is measured
        try:
            with self.reporter.stage(index, self.stages_total, stage, key, steps, start_epoch,
                                     partial.step if partial else 0) as bar:
                control.on_step = bar.step
                for epoch in range(start_epoch, stage.epochs):
                    lap_started = budget.now() if budget is not None else 0.0
                    state.epoch, state.step, state.steps_per_epoch = epoch, 0, steps
                    hooks.on_epoch_start(state)
                    mid_epoch = partial if epoch == start_epoch else None
                    if mid_epoch is not None:  # the hook ran again for this epoch; now state and RNGs as saved
                        hooks.load_state_dict(self._method_state(resume.checkpoint))
                        restore_rng(resume.checkpoint["rng"])
                        generator.set_state(resume.checkpoint["epoch_generator"])
                    epoch_generator = generator.get_state()
                    try:
                        stats = train_one_epoch(self.model, hooks, train_loader, optimizer, state, generator,
                                                self.precision, scaler, control, mid_epoch)
                    except EpochInterrupted as stop:
                        self._checkpoint(recorder, state, key, hooks, epoch, optimizer, scaler, generator, started,
                                         stop.progress, epoch_generator)
                        raise self._interrupted(recorder, f"in stage {index + 1} ({stage.name}), epoch {epoch + 1}, "
                                                          f"after step {stop.progress.step}") from None
                    hooks.on_epoch_end(state)
                    dist.broadcast_tensors(list(self.model.buffers()))  # BN running statistics: rank 0's
                    if self.test_every_epoch:
                        stats["test_acc"] = self.test_accuracy()
                    bar.epoch_done(epoch, stats)
                    result.epochs.append(stats)
                    if dist.is_main and recorder is not None:
                        recorder.epoch_done({"stage": stage.name, "stage_index": index, "epoch": epoch + 1,
                                                  **stats})
                    self._checkpoint(recorder, state, key, hooks, epoch + 1, optimizer, scaler, generator, started)
                    if budget is not None and mid_epoch is None:
                        budget.lap(key, budget.now() - lap_started)
                    # a stage's last epoch counts twice: its evaluation and artifact come after it
                    if epoch + 1 < stage.epochs and self.stop_agreed(2.0 if epoch + 2 == stage.epochs else 1.0, key):
                        raise self._interrupted(recorder, f"in stage {index + 1} ({stage.name}) after epoch "
                                                          f"{epoch + 1}")
        except torch.OutOfMemoryError:
            batch = stage.optim.batch_size
            per_rank = f" ({batch // dist.world} per process)" if dist.enabled else ""
            raise OutOfMemory(f"out of {self.device.type.upper()} memory in stage {index + 1} ({stage.name}) at batch "
                              f"size {batch}{per_rank}; try --batch-size {max(batch // 2, 1)} (the learning rate "
                              f"scales linearly with it)") from None
        finally:
            control.ddp_model = None  # drops DDP's gradient hooks before the next stage builds its own

    def _interrupted(self, recorder: StageRecorder | None, where: str) -> Exception:
        if recorder is None:
            return self.stop.error(f"stopped by {self.stop.name} {where}")
        return recorder.interrupted(where)

    # checkpoints ----------------------------------------------------------------------------------
    def _checkpoint(self, recorder: StageRecorder | None, state: StageState, key: str, hooks: Method,
                    epochs_done: int, optimizer, scaler, generator, stage_started: float, progress: EpochProgress | None = None,
                    epoch_generator: torch.Tensor | None = None) -> None:
        """Everything needed to continue the stage exactly from here (rank 0 writes; the others send their
        method state). Without a recorder (benchmarks) nothing is saved."""
        if recorder is None:
            return
        method_state = hooks.state_dict()
        partial = None
        if progress is not None:  # this rank's sums of the interrupted epoch so far
            partial = {"loss_sum": progress.loss_sum, "correct": progress.correct, "seen": progress.seen,
                       "seconds": progress.seconds}
        by_rank = None
        if self.dist.enabled:  # per-rank accumulators (e.g. DaSL's class sums, the epoch's loss) differ
            by_rank = [None] * self.dist.world
            torch.distributed.all_gather_object(by_rank, _to_cpu({"method": method_state, "partial": partial}))
        if self.dist.is_main:
            recorder.save_checkpoint({
                "stage_index": state.stage_index, "stage_key": key,
                "epoch": epochs_done, "step": progress.step if progress else 0,
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "method": method_state, "method_by_rank": [r["method"] for r in by_rank] if by_rank else None,
                "partial_by_rank": [r["partial"] for r in by_rank] if by_rank else None,
                "rng": capture_rng(generator), "epoch_generator": epoch_generator, "partial": partial,
                "stage_seconds": time.perf_counter() - stage_started, "world_size": self.dist.world,
            })
        if progress is not None:
            self.dist.barrier()  # interrupted: leave together, once the file is complete

    def _method_state(self, checkpoint: dict) -> dict:
        by_rank = checkpoint.get("method_by_rank")
        if by_rank and len(by_rank) == self.dist.world:
            return by_rank[self.dist.rank]
        return checkpoint["method"]

    def _restore(self, resume: ResumePoint, hooks: Method, optimizer, scaler,
                 generator) -> tuple[int, EpochProgress | None]:
        """Load a checkpoint of the current stage. Returns (epochs done, progress of an interrupted epoch)."""
        checkpoint = resume.checkpoint
        try:
            self.model.load_state_dict(checkpoint["model"], strict=True)
            if optimizer is not None and checkpoint.get("optimizer") is not None:
                optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"checkpoint {resume.path} does not fit this model or optimizer ({first}); "
                                  f"the method's code changed since the run started: start a new run") from None
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        step = int(checkpoint.get("step", 0))
        if step == 0:
            hooks.load_state_dict(self._method_state(checkpoint))
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


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(tensor)
    return tensor


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
