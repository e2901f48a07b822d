"""Planning a sweep: every run's keys without training, which are finished, duplicates or to resume, and
the order they start in (the most work first; docs/sweeps.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from ..engine.store import RunStore
from ..errors import ConfigError, LTBenchError
from ..record import CONFIG_FILE, run_key
from .suite import Suite

EXECUTORS = ("local", "slurm")
HIDDEN_EXECUTORS = {"submitit-local": "local", "submitit-debug": "debug"}  # submitit's stand-ins, for tests


@dataclass
class SweepRun:
    """One planned grid point: its keys and whether it is finished, a duplicate, or to run (or resume)."""

    label: str
    config: RunConfig
    run_key: str
    stages: list[tuple[str, str, bool]]  # (name, key, cacheable)
    done: str | None = None  # the finished run folder with this run key
    duplicate_of: str | None = None  # an earlier grid point with the same run key
    work: dict[str, float] = field(default_factory=dict)  # stage key -> estimated cost (see stage_work)

    def uncached(self, store: RunStore) -> set[str]:
        return {key for _, key, cacheable in self.stages if cacheable and not store.has_stage(key)}

    def remaining(self, store: RunStore) -> float:
        """Estimated cost of the stages this run would train now (the cached ones it reuses cost nothing)."""
        return self.work_of(self.uncached(store))

    def work_of(self, keys: set[str]) -> float:
        return sum(self.work.get(key, 0.0) for key in keys)


FROZEN_SHARE = 0.3  # a step with frozen features (forward only through the backbone) costs ~1/4-1/3 of a full one


def stage_work(stage) -> float:
    """A stage's cost in full-network epochs: what the scheduler compares to start the longest runs first."""
    return stage.epochs * (1.0 if stage.trainable == "all" else FROZEN_SHARE)


def scan_runs(results: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """run key -> run folder name, for finished runs (metrics.json, written last) and for unfinished ones
    (config.json only: stopped or killed, resumable from their checkpoint; the newest one per key)."""
    finished, unfinished = {}, {}
    folders = sorted((p for p in (Path(results) / "runs").glob(f"*/{CONFIG_FILE}")), key=lambda p: p.stat().st_mtime)
    for config in folders:
        try:
            key, done = run_key(config.parent)
        except (OSError, ValueError):  # being written or damaged: neither finished nor resumable
            continue
        if key:
            (finished if done else unfinished)[key] = config.parent.name
    return finished, unfinished


def check_executor(executor: str) -> None:
    if executor not in (*EXECUTORS, *HIDDEN_EXECUTORS):
        raise ConfigError(f"unknown executor '{executor}' (choose {', '.join(EXECUTORS)})")


def plan_sweep(suite: Suite, results: str | Path, executor: str = "local",
               retrain_before: float | None = None, deadline: float | None = None) -> list[SweepRun]:
    """Plan every run (no training), mark finished and duplicate ones; the most work to do first.
    ``retrain_before`` (--retrain): run everything again, reusing no stage artifact older than that time.
    ``deadline`` (--time-limit): every run stops at an epoch boundary before it. A submitit job gets its run
    folder's name here, so that a job requeued after its time limit continues that folder (``RunJob``)."""
    from ..engine.plan import default_run_name, plan_run

    check_executor(executor)
    if executor == "slurm":
        auto = sorted({label for label, config in suite.runs if config.precision == "auto"})
        if auto:  # keys include the precision, and 'auto' would resolve on this (login) machine
            raise ConfigError(f"{suite.path}: set precision = \"bf16\" (or fp16, fp32) for a slurm sweep: 'auto' "
                              f"resolves on the machine that plans the sweep, not on the GPU nodes, so finished "
                              f"runs would not be recognised ({auto[0]}, ...)")
    (finished, unfinished), seen, runs = scan_runs(results), {}, []
    if retrain_before is not None:
        finished, unfinished = {}, {}
    names = {p.name for p in RunStore(results).runs.glob("*")} if executor != "local" else set()
    for label, config in suite.runs:
        config = dataclasses.replace(config, retrain_before=retrain_before, deadline=deadline)
        try:
            plan = plan_run(config)
        except LTBenchError as exc:  # e.g. an imbalance factor the data set cannot give: say which run of which file
            raise type(exc)(f"{suite.path}: run '{label}': {exc}") from None
        stages = [(stage.name, key, stage.cached)
                  for stage, key in zip(plan.stages, plan.keys)]
        run = SweepRun(label, config, plan.run_key, stages, finished.get(plan.run_key), seen.get(plan.run_key),
                       {key: stage_work(stage) for stage, key in zip(plan.stages, plan.keys)})
        if not run.done and plan.run_key in unfinished:  # an interrupted sweep: continue that run, not a new one
            run.config = dataclasses.replace(config, run_name=unfinished[plan.run_key], resume=True)
        elif executor != "local" and not config.run_name:
            name = base = default_run_name(config, plan)
            for copy in range(2, len(names) + 3):  # two runs planned within one millisecond
                if name not in names:
                    break
                name = f"{base}-{copy}"
            names.add(name)
            run.config = dataclasses.replace(config, run_name=name)
        runs.append(run)
        seen.setdefault(plan.run_key, label)
    first_seen: dict[str, int] = {}
    for run in runs:
        first_seen.setdefault(run.stages[0][1], len(first_seen))
    store = RunStore(results)
    return sorted(runs, key=lambda r: (-r.remaining(store), first_seen[r.stages[0][1]], len(r.stages)))


def describe(runs: list[SweepRun], results: str | Path) -> list[str]:
    """One line per run for --dry-run: done / duplicate / run / resume, and per stage train or reuse."""
    store, produced, lines = RunStore(results), {}, []
    width = len(str(len(runs)))
    for number, run in enumerate(runs, 1):
        head = f"[{number:>{width}}/{len(runs)}]"
        if run.done:
            lines.append(f"{head} done       {run.label}: finished in runs/{run.done}")
            continue
        if run.duplicate_of:
            lines.append(f"{head} duplicate  {run.label}: same run key as {run.duplicate_of}")
            continue
        stages = []
        for name, key, cacheable in run.stages:
            if not cacheable:
                what = "post-hoc (not cached)"
            elif store.has_stage(key) and run.config.retrain_before is None:
                what = f"reuse {key} (cached)"
            elif key in produced:
                what = f"reuse {key} (trained by {produced[key]})"
            else:
                what, produced[key] = f"train {key}", run.label
            stages.append(f"{name}: {what}")
        action = f"resume     {run.label} (runs/{run.config.run_name})" if run.config.resume else \
            f"run        {run.label}"
        lines.append(f"{head} {action}: " + "; ".join(stages))
    return lines
