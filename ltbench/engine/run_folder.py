"""A run's folder (``<out>/runs/<name>/``): create it (config.json), open it for ``--resume``, write its
epochs, checkpoints and, at the end, its results (metrics.json last). Rank 0 holds its run lock while the
run lives and does every write.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, defining_fields, resolved_later
from ..errors import ConfigError, NotFoundError, RunExistsError, WriteError, did_you_mean
from ..method import create_method
from ..metrics import classification_metrics
from ..files import (append_jsonl, file_size, read_json, remove_temp_files, truncate, write_error, write_json, write_npz,
                     write_text)
from ..record import METRICS_FILE, NUMERICS_VERSION, PER_CLASS_FILE, TEST_LOGITS_FILE, config_json, metrics_json
from .checkpoint import (CheckpointError, ResumePoint, checkpoint_dir, load_checkpoint, load_state, save_checkpoint,
                         save_state)
from .distributed import Distributed
from .divergence import why_diverged
from .locks import HoldsLock, StageLock, describe_holder
from .plan import Plan, default_run_name, resolved_workers
from .progress import Reporter
from .scalars import ScalarLog
from .store import RunStore

RUN_LOCK = ".lock"  # in the run folder: held while a process runs it (so a resume never joins a live run)
RUN_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems: longer names fail in mkdir

# RunConfig fields that define what a run computes: a resumed run takes them from its config.json, and
# any of them given again on the command line must agree (the others may differ: device, data root, ...)
DEFINING_FIELDS = defining_fields()  # RunConfig field metadata (config.setting)
RESOLVED_LATER = resolved_later()


class RunLock(StageLock):
    """``<run>/.lock``: held by the process that runs the folder, so a ``--resume`` never joins a live run."""

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / RUN_LOCK, owner=Path(run_dir).name)

    def acquire_unless_running(self) -> None:
        """Take the lock, breaking a stale one; refuse while the run is alive elsewhere."""
        while not self.try_acquire():
            held = self.read()
            if held is None:
                continue
            raw, info, age = held
            if self.stale_reason(info, age) is None:
                copied = (f" (if it ran on another machine and this folder is a copy, delete {self.path})"
                          if info.get("host") != socket.gethostname() else "")
                raise RunExistsError(f"run '{self.path.parent.name}' is still running ({describe_holder(info)}); let "
                                     f"it finish or stop it before --resume{copied}")
            self.break_stale(raw)


class RunFolder(HoldsLock):
    """The files of one run. A context manager: leaving it releases the run lock (rank 0)."""

    def __init__(self, store: RunStore, name: str, dist: Distributed, lock: RunLock | None = None,
                 tensorboard: bool = False):
        self.store, self.name, self.dist, self.lock = store, name, dist, lock
        self.path = store.run_dir(name)
        self.scalars = ScalarLog(self.path / "tensorboard") if tensorboard and dist.is_main else None  # --tensorboard
        self.last_checkpoint: Path | None = None

    @classmethod
    def create(cls, plan: Plan, store: RunStore, dist: Distributed) -> "RunFolder":
        """A new run folder (rank 0 writes it; every rank gets its name)."""
        lock: RunLock | None = None

        def create_on_main() -> str:
            nonlocal lock
            name, lock = _create_run(plan.config, plan, store, dist.world)
            return name

        name = dist.on_main(create_on_main)
        return cls(store, name, dist, lock, plan.config.tensorboard)

    @classmethod
    def open_for_resume(cls, plan: Plan, store: RunStore, dist: Distributed,
                        reporter: Reporter) -> tuple["RunFolder", ResumePoint | None]:
        """The unfinished run ``plan.config.run_name`` and the checkpoint to continue from (None: none yet)."""
        run_dir = store.run_dir(plan.config.run_name)
        lock: RunLock | None = None

        def open_on_main() -> str | None:
            nonlocal lock
            lock = RunLock(run_dir)
            lock.acquire_unless_running()
            try:
                store.check_writable()  # a folder committed to git comes back without its empty stages/
                return _open_resume(run_dir, plan, reporter)
            except BaseException:
                lock.release()
                raise

        found = dist.on_main(open_on_main)
        folder = cls(store, plan.config.run_name, dist, lock, plan.config.tensorboard)
        if found is None:
            return folder, None
        path = Path(found)
        resume = ResumePoint(load_state(path, "cpu"), path)
        folder.last_checkpoint = path
        return folder, resume

    @property
    def log_path(self) -> Path:
        return self.path / "epochs.jsonl"

    def log_epoch(self, record: dict) -> None:
        """Rank 0: one line of epochs.jsonl (and TensorBoard)."""
        append_jsonl(self.log_path, record)
        if self.scalars is not None:
            self.scalars.epoch(record)

    def log_size(self) -> int:
        return file_size(self.log_path)

    def cut_log(self, size: int) -> None:
        truncate(self.log_path, size)

    def save_checkpoint(self, state: dict) -> None:
        self.last_checkpoint = save_checkpoint(self.path, state)

    def resume_command(self) -> str:
        command = (f"ltbench run --results {shlex.quote(str(self.store.root))} --run-name {shlex.quote(self.name)} "
                   f"--resume")
        return command + (f" --nproc {self.dist.world}" if self.dist.enabled else "")


def _create_run(config: RunConfig, plan: Plan, store: RunStore, world: int) -> tuple[str, RunLock]:
    """Rank 0: the run folder with config.json, an empty epochs.jsonl and the subset. Every check that
    can fail comes before the first write, so a refused run leaves the results folder as it was."""
    run_name = config.run_name or default_run_name(config, plan)
    if store.run_dir(run_name).exists():
        raise RunExistsError(f"run '{run_name}' already exists in {store.runs}; choose another --run-name (or add "
                             f"--resume to continue it if it did not finish)")
    store.check_writable()
    run_dir = store.create_run(run_name)
    lock = RunLock(run_dir)
    lock.try_acquire()  # the folder is new and ours (exclusive mkdir)
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
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_name, lock


def _open_resume(run_dir: Path, plan: Plan, reporter: Reporter) -> str | None:
    """Rank 0: the checkpoint to resume from (falling back to prev.pt), with epochs.jsonl cut back to it."""
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


BEST_ON_TEST = "best on test, as the references report: a choice made on the test set"


def best_epochs_on_test(log_path: Path, plan: Plan, stage_records: list[dict]) -> dict | None:
    """From epochs.jsonl (--log-test-acc): each trained stage's best epoch by test top-1, into its record in
    ``stage_records``; returns the final stage's, when the run's reported number is that stage's last epoch
    (trained here, no post-hoc step or test-logit transform after it), else None. Labelled BEST_ON_TEST: it
    is what the references report, and it is never used for anything but this report."""
    by_stage: dict[int, dict[int, float]] = {}
    try:
        lines = log_path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
            if "test_acc" in entry:
                by_stage.setdefault(int(entry["stage_index"]), {})[int(entry["epoch"])] = float(entry["test_acc"])
        except (ValueError, KeyError, TypeError):
            continue
    final = None
    for index, (stage, record) in enumerate(zip(plan.stages, stage_records)):
        accs = by_stage.get(index, {})
        if not stage.epochs or sorted(accs) != list(range(1, stage.epochs + 1)):  # reused, or not every epoch
            continue
        epoch = max(accs, key=lambda e: (accs[e], -e))  # the earliest of equal ones
        record["best_epoch_on_test"] = best = {
            "stage": index + 1, "epoch": epoch, "test_acc": accs[epoch], "epochs": stage.epochs,
            "last_epoch_test_acc": accs[stage.epochs], "note": BEST_ON_TEST}
        if index == len(plan.stages) - 1 and not stage.post and plan.test_transform(index) is None:
            final = dict(best)
    return final


def finish_run(folder: RunFolder, plan: Plan, test, stage_records: list[dict], wall_time_s: float, model,
               resume: ResumePoint | None, spans: list[dict] | None = None) -> dict:
    """The run's metrics from the final test logits; rank 0 writes the result files, metrics.json last,
    then drops the checkpoints and the run lock. ``spans``: where it trained (``StageRunner.spans``)."""
    logits, labels, features = test
    metrics, per_class = classification_metrics(logits.cpu(), labels.cpu(), plan.data.class_counts, features.cpu())
    metrics.update(stages=stage_records, wall_time_s=wall_time_s, run_name=folder.name,
                   run_key=plan.run_key, status="complete", world_size=folder.dist.world, spans=spans or [])
    if folder.dist.is_main:
        best = best_epochs_on_test(folder.log_path, plan, stage_records)
        if best is not None:
            metrics["best_epoch_on_test"] = best
    if resume is not None:
        checkpoint = resume.checkpoint
        metrics["resumed_from"] = {"checkpoint": resume.path.name, "stage": checkpoint["stage_index"] + 1,
                                   "epoch": checkpoint["epoch"], "step": checkpoint["step"]}
    if folder.dist.is_main:
        run_dir = folder.path
        diverged = why_diverged(folder.log_path, logits, plan.data.num_classes)  # a finite loss that exploded
        if diverged:
            metrics.update(diverged=True, diverged_because=diverged)
        write_npz(run_dir / TEST_LOGITS_FILE, logits=logits.cpu().numpy().astype(np.float32),
                  labels=labels.cpu().numpy().astype(np.int64))
        header = "class,train_count,test_count,correct,acc,group\n"
        write_text(run_dir / PER_CLASS_FILE, header + "".join(
            f"{r['class']},{r['train_count']},{r['test_count']},{r['correct']},{r['acc']:.4f},{r['group']}\n"
            for r in per_class))
        save_state(run_dir / "model.pt", {"model": model.state_dict(), "method": plan.method.state_dict()})
        write_json(run_dir / METRICS_FILE, metrics_json(metrics))  # written last: its presence marks a finished run
        if folder.scalars is not None:
            folder.scalars.close()
        shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)  # model.pt is the final state
        folder.release()
    return metrics


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


def resolved_config(plan: Plan, run_name: str, world: int = 1) -> dict:
    config = plan.config.to_dict()
    data_info = {k: v for k, v in plan.data.info.items() if k != "class_names"}
    config.update(
        run_name=run_name, run_key=plan.run_key, method_options=plan.method.options,
        # tables label changed options without importing it; the defaults on this data set (Method.dataset_defaults)
        method_defaults=type(plan.method).defaults_for(plan.config.dataset, plan.data.info.get("imbalance"),
                                                       plan.method.options),
        imbalance=plan.data.info.get("imbalance"), backbone=plan.backbone, recipe=plan.recipe_name,
        device=str(plan.device), precision=plan.precision, world_size=world, workers=resolved_workers(plan.config),
        stages=[{"name": s.name, "key": k, **s.spec()} for s, k in zip(plan.stages, plan.keys)],
        data=data_info, class_counts=plan.data.class_counts.tolist(), notices=plan.notices,
        reported_epoch="last",  # the model after the last epoch; never a best epoch chosen on the test set
        numerics=NUMERICS_VERSION,  # tables never pool runs of two versions (ltbench.record)
        versions=_versions(), git_commit=_git_commit(), host=socket.gethostname(), command=sys.argv,
        created=dt.datetime.now().isoformat(timespec="seconds"), torch_threads=torch.get_num_threads(),
    )
    return config_json(config)  # the run-file format (ltbench.record), with its schema version


def check_run_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or not name.isprintable():
        raise ConfigError(f"--run-name {name!r}: a run name is one folder name (no '/', no control characters), "
                          f"e.g. crt-seed0")
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if size > RUN_NAME_BYTES:
        raise ConfigError(f"--run-name is {size} bytes long ({name[:24]}...): a folder name may have at most "
                          f"{RUN_NAME_BYTES}; choose a shorter one")


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
        hint = did_you_mean(name, unfinished, cutoff=0.5)
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
            given = create_method(method, given, config.plugins or saved.get("plugins"),
                                  dataset=saved.get("dataset", config.dataset), imbalance=saved.get("imbalance")).options
        if given == kept or (name_ in RESOLVED_LATER and given == RESOLVED_LATER[name_]):
            continue
        differences.append(f"{name_} {given!r} (the run has {'the default' if kept is None else repr(kept)})")
    if differences:
        raise ConfigError(f"--resume: {'; '.join(differences)}: a resumed run keeps its settings; leave them out "
                          f"(they come from {run_dir / 'config.json'}) or start a new run")
    kept = {f.name: saved.get(f.name, getattr(defaults, f.name)) for f in fields(RunConfig) if f.name in DEFINING_FIELDS}
    # paths from where the run started, kept only where they exist here: a run folder copied to another
    # machine or clone finds its data under --data-root, $LTBENCH_DATA or ~/data instead
    saved_root = saved.get("data_root")
    data_root = config.data_root or (saved_root if saved_root and Path(saved_root).expanduser().exists() else None)
    plugins = config.plugins or [p for p in saved.get("plugins") or [] if Path(p).expanduser().exists()]
    resumed = replace(config, **kept, resume=True, data_root=data_root, plugins=plugins,
                      test_every_epoch=config.test_every_epoch or bool(saved.get("test_every_epoch")))
    return resumed, saved


def check_plan_unchanged(plan: Plan, saved: dict, run_dir: Path) -> None:
    old = [s.get("key") for s in saved.get("stages", [])]
    if plan.run_key != saved.get("run_key") or plan.keys != old:
        raise ConfigError(f"cannot resume run '{run_dir.name}': its plan changed since it started (stage keys "
                          f"{old} -> {plan.keys}): the code, the data or a plugin changed; start a new run")
