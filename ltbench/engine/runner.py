"""Running one plan: ``execute`` reads top to bottom (settings -> plan -> model -> run folder -> stages ->
results), and ``StageRunner`` takes each planned stage from the stage cache or trains it.

Reliability (docs/reliability.md): a checkpoint at every epoch end, and on SIGTERM/SIGINT, makes a killed
run resumable (``--resume``), bit-exactly on CPU; a time budget (``--time-limit``) stops it at an epoch
boundary before the budget ends; a lock file per stage key makes concurrent runs train a shared stage once;
under torchrun the same code trains with DistributedDataParallel, rank 0 writing files.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import torch

from ..config import RunConfig
from ..errors import LTBenchError, WriteError
from ..metrics import classification_metrics
from ..method import DataInfo
from ..files import _clean
from .checkpoint import ResumePoint
from .distributed import Distributed, init_from_env
from .interrupt import GracefulStop, RunInterrupted, TimeLimitReached, budget_for, refuse_if_stopped
from .machine import machine
from .memory import keep_freed_memory
from .plan import Plan, check_world, plan_run, plugin_problems, resolved_workers
from .progress import Reporter
from .run_folder import RunFolder, check_plan_unchanged, check_run_name, finish_run, resume_config
from .scalars import check_available
from .stage_cache import Decision, StageCache
from .store import RunStore
from .trainer import OutOfMemory, Trainer, build_stage_model


def execute(config: RunConfig, reporter: Reporter | None = None, download: bool = False,
            explicit: set[str] | None = None) -> dict:
    """Plan, train and write one run (or continue one: ``config.resume``). Returns its metrics (also in
    <out>/runs/<name>/metrics.json). Under torchrun every rank calls this; rank 0 writes and prints."""
    reporter = reporter or Reporter()
    refuse_if_stopped()
    budget = budget_for(config.deadline)
    if budget is not None and budget.passed():  # a sweep's later runs: nothing is created
        raise TimeLimitReached(f"not started: {budget.describe()}; give it a new --time-limit")
    keep_freed_memory()  # no page faults for the same activations every step (engine/memory.py)
    dist = init_from_env(config.device)
    if not dist.is_main:
        reporter = Reporter(reporter.console, silent=True)
    try:
        with GracefulStop(budget) as stop:
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
    saved = None  # the config.json of the run being resumed
    if config.run_name is not None:
        check_run_name(config.run_name)
    if config.resume:
        config, saved = resume_config(config, explicit)
    if config.tensorboard:
        check_available()
    reporter.log(f"reading {config.dataset} and planning the stages ...")
    plan = plan_run(config, download)
    if dist.enabled:
        plan.device = dist.device
        check_world(plan, dist.world)
    store = RunStore(config.out)
    if saved is not None:
        check_plan_unchanged(plan, saved, store.run_dir(config.run_name))
    for problem in plugin_problems(config) + plan.data.info.get("warnings", []):  # data: a damaged cache rebuilt
        reporter.warn(problem)
    for notice in plan.notices:
        reporter.log(notice)
    reporter.log(f"building {plan.backbone} ...")
    trainer = build_trainer(plan, reporter, dist, stop)  # builds the model: a bad backbone fails before any write
    folder, resume = _open_run_folder(plan, store, dist, reporter, resuming=saved is not None)
    with folder:  # rank 0 holds the run lock until the results are written
        runner = StageRunner(plan, trainer, folder, reporter, resume)
        try:
            runner.run()
            metrics = finish_run(folder, plan, runner.final_test(), runner.records, runner.elapsed(), trainer.model,
                                 resume, runner.spans())
        except WriteError as exc:  # disk full, say: the checkpoints written so far are intact
            kept = (f"the last checkpoint {folder.last_checkpoint} is kept" if folder.last_checkpoint
                    else "no checkpoint was saved yet")
            raise WriteError(f"{exc}; {kept}; then continue with: {folder.resume_command()}") from None
    dist.barrier()
    if metrics.get("diverged"):
        reporter.warn(f"run '{folder.name}' diverged: {metrics['diverged_because']}; its metrics.json says so "
                      f"(\"diverged\": true): lower --lr or --batch-size and start a new run")
    reporter.summary(config.method, plan, metrics)
    return metrics


def build_trainer(plan: Plan, reporter: Reporter, dist: Distributed | None = None,
                  stop: GracefulStop | None = None) -> Trainer:
    """The plan's loaders and model (seeded; set up by the method unless stage 1 is core-trained) in a Trainer."""
    from ..data.longtail import shot_groups

    config, data, device = plan.config, plan.data, plan.device
    loaders = {split: data.loader(split, device, resolved_workers(config))
               for split in ("train", "val", "test") if getattr(data, split) is not None}
    info = DataInfo(data.num_classes, torch.as_tensor(data.class_counts, device=device),
                    torch.as_tensor(shot_groups(data.class_counts), device=device), device)
    model = build_stage_model(plan.method, plan.backbone, data.source.channels, info, config.seed, config.pretrained,
                              config.compile, first_stage_core_trained=plan.stages[0].core_trained)
    return Trainer(model, info, loaders, plan.precision, eval_batch_size=config.eval_batch_size, dist=dist, stop=stop,
                   reporter=reporter, stages_total=len(plan.stages), names=(plan.method.name, config.dataset),
                   test_every_epoch=config.test_every_epoch)


def _open_run_folder(plan: Plan, store: RunStore, dist: Distributed, reporter: Reporter,
                     resuming: bool) -> tuple[RunFolder, ResumePoint | None]:
    config = plan.config
    if not resuming:
        folder = RunFolder.create(plan, store, dist)
        reporter.log(f"run '{folder.name}': {config.method} on {config.dataset} ({plan.describe()}) -> {folder.path}")
        return folder, None
    folder, resume = RunFolder.open_for_resume(plan, store, dist, reporter)
    if resume is None:
        reporter.log(f"run '{folder.name}': no checkpoint yet, starting it over in {folder.path}")
        return folder, None
    checkpoint = resume.checkpoint
    stage = plan.stages[resume.stage_index]
    where = f"epoch {checkpoint['epoch']} of {stage.epochs} done" + (
        f", step {checkpoint['step']} of epoch {checkpoint['epoch'] + 1}" if checkpoint["step"] else "")
    reporter.log(f"run '{folder.name}': resuming from {resume.path} (stage {resume.stage_index + 1} "
                 f"({stage.name}), {where})")
    return folder, resume


class StageRunner:
    """Runs the stages of a plan in one run folder (on every DDP rank; rank 0 writes the files): each stage
    finished before a resumed checkpoint is skipped, a cached one reused, the others trained; then its
    post-hoc step and test metrics. Also the trainer's ``StageRecorder``: epochs.jsonl and checkpoints."""

    def __init__(self, plan: Plan, trainer: Trainer, folder: RunFolder, reporter: Reporter,
                 resume: ResumePoint | None = None):
        self.plan, self.trainer, self.folder, self.reporter, self.resume = plan, trainer, folder, reporter, resume
        self.dist = trainer.dist
        self.cache = StageCache(folder.store, folder.name, self.dist, reporter, trainer.device,
                                plan.config.retrain_before)
        self.records: list[dict] = []
        self.last_test = None  # the test logits of the last stage evaluated in this process
        self.started = time.perf_counter()
        checkpoint = resume.checkpoint if resume else {}
        self.elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        self.stage_log_start = int(checkpoint.get("stage_log_start", 0))  # epochs.jsonl size at the stage's start
        self.spans_before = json.loads(checkpoint.get("spans", "[]"))  # the processes that trained it before
        self.span: dict | None = None  # this process's, from its first trained epoch on

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def run(self) -> None:
        plan, trainer = self.plan, self.trainer
        resume_index = self.resume.stage_index if self.resume else -1
        finished_records = json.loads(self.resume.checkpoint["records"]) if self.resume else []
        for index, (stage, key) in enumerate(zip(plan.stages, plan.keys)):
            self.last_test = None  # set only by a stage evaluated in this process
            label = f"stage {index + 1} ({stage.name})"
            # ahead: an epoch (two when it is the stage's last: its evaluation and artifact follow); none for a
            # post-hoc stage, which only stops once the time limit has passed
            if trainer.stop_agreed(0.0 if not stage.epochs else 2.0 if stage.epochs == 1 else 1.0, key):
                raise self.interrupted(f"before {label}")
            if index == plan.setup_index():  # the shared stages are done (trained, loaded or resumed past)
                trainer.setup_method(plan.method, plan.config.seed)
            hooks = plan.hooks(index)
            state = trainer.begin_stage(index, stage, hooks)  # before anything is loaded: methods add extras (LWS)
            if index < resume_index:  # finished before the checkpoint, which holds its weights and state
                self.records.append(finished_records[index])
                continue
            resume = self.resume if index == resume_index else None
            if resume is None and self.dist.is_main:
                self.stage_log_start = self.folder.log_size()
            if not stage.cached:
                record = self._train(state, key, hooks, resume)
            else:
                claim = self.cache.claim(label, key, give_up=lambda: self._stop_while(f"while waiting for {label}"))
                if claim.decision is Decision.REUSE:
                    record = self._reuse(claim, label, stage, key, hooks, resuming=resume is not None)
                else:
                    with claim:  # rank 0 holds the stage's lock until its artifact is saved
                        record = self._train(state, key, hooks, resume)
                        record["metrics"] = self._stage_metrics()  # exactly what training produced: post-hoc after
                        self.cache.save(key, stage, trainer.model, hooks, record["metrics"], record["seconds"])
            if stage.post:  # the stage's own post-hoc step, never part of an artifact; it tunes on the model's
                record["post"] = plan.method.post_stage(state) or {}  # logits, before test_logits applies
            transform = plan.test_transform(index)
            if transform is not None:  # the final model's logits from here on, never an artifact's
                trainer.logit_transform, self.last_test = transform, None
            if stage.post or not stage.cached or transform is not None:
                record["metrics"] = self._stage_metrics()
            if self.folder.scalars is not None:
                self.folder.scalars.stage_end(stage.name, stage.epochs, record.get("metrics"))
            self.records.append(record)

    def _train(self, state, key: str, hooks, resume: ResumePoint | None) -> dict:
        result = self.trainer.fit_stage(state, key, self.plan.seeds[state.stage_index], hooks, resume, recorder=self)
        stage = state.stage
        return {"name": stage.name, "key": key, "reused": False, "trained_by": self.folder.name,
                "metrics": None, "post": {}, "seconds": result.seconds, "spec": stage.spec()}

    def _reuse(self, claim, label: str, stage, key: str, hooks, resuming: bool) -> dict:
        meta = self.cache.load(claim, key, self.trainer.model, hooks)
        own = meta.get("trained_by") == self.folder.name  # this run finished it before it was interrupted
        if own:
            self.reporter.log(f"{label}: finished before the interruption ({key})")
        else:
            self.reporter.log(f"{label}: reused {key} (trained by run '{meta.get('trained_by')}')")
            if resuming and self.dist.is_main:  # another run finished the stage this one was training
                self.folder.cut_log(self.stage_log_start)
        record = {"name": stage.name, "key": key, "reused": not own, "trained_by": meta.get("trained_by"),
                  "metrics": meta.get("metrics"), "post": {}}
        if own:
            record["seconds"] = meta.get("seconds")
        record["spec"] = stage.spec()
        return record

    def _stage_metrics(self) -> dict:
        self.last_test = self.trainer.evaluate_split("test")  # the final report reuses it after the last stage
        logits, labels, features = self.last_test
        metrics, _ = classification_metrics(logits.cpu(), labels.cpu(), self.plan.data.class_counts, features.cpu())
        return metrics

    def final_test(self):
        """Test logits, labels and features of the finished model, evaluated once."""
        return self.last_test if self.last_test is not None else self.trainer.evaluate_split("test")

    def spans(self) -> list[dict]:
        """Where the run trained: one span per process that trained epochs (first and last epoch, wall
        seconds of the process on the run up to its last epoch, the machine), this process's last."""
        return self.spans_before + ([self.span] if self.span else [])

    # the trainer's StageRecorder -------------------------------------------------------------------
    def epoch_done(self, record: dict) -> None:
        self.folder.log_epoch(record)
        epoch = {"stage": record["stage_index"] + 1, "epoch": record["epoch"]}
        if self.span is None:
            self.span = {"first_epoch": epoch, "last_epoch": epoch, "epochs": 0, "seconds": 0.0,
                         "started": dt.datetime.now().isoformat(timespec="seconds"),
                         "machine": machine(self.trainer.device, self.dist.world)}
        self.span.update(last_epoch=epoch, epochs=self.span["epochs"] + 1,
                         seconds=round(time.perf_counter() - self.started, 1))

    def save_checkpoint(self, stage_part: dict) -> None:
        self.folder.save_checkpoint({
            "run_name": self.folder.name, "run_key": self.plan.run_key, **stage_part,
            "records": json.dumps(_clean(self.records)), "epochs_log_bytes": self.folder.log_size(),
            "stage_log_start": self.stage_log_start, "elapsed_s": self.elapsed(),
            "spans": json.dumps(_clean(self.spans())), "saved": dt.datetime.now().isoformat(timespec="seconds"),
        })

    def interrupted(self, where: str) -> RunInterrupted:
        stop, last = self.trainer.stop, self.folder.last_checkpoint
        saved = f"checkpoint {last}" if last else "no checkpoint yet"
        command = self.folder.resume_command()
        if stop.timed_out and stop.budget is not None:  # the same budget again (the next block's)
            command += f" --time-limit {stop.budget.limit()}"
        return stop.error(f"stopped by {stop.name} {where} ({saved}); continue with: {command}")

    def _stop_while(self, where: str) -> RunInterrupted | None:
        return self.interrupted(where) if self.trainer.stop_agreed() else None
