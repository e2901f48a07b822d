"""Sweeps: a TOML suite describes a grid of runs; finished runs are skipped and shared stages train once.

Suite files
-----------
A suite is a TOML file (examples in ``benchmarks/``; ``benchmarks/SUITES.md`` says the same)::

    name = "cpu-cifar10-lt"          # optional; default: the file name. Slurm logs: <results>/sweeps/<name>/
    description = "what it is for"   # optional
    methods = ["ce", "crt", "dasl"]  # methods run with their defaults (plus [options.METHOD] below)
    datasets = ["cifar10-lt"]
    imbalance = [100, 50]            # omit: each dataset's default (published LT splits have none)
    seeds = [0, 1, 2]                # default [0]
    recipe = "cpu"                   # every other RunConfig field (`ltbench run --help`, dashes become
    backbone = "resnet32"            # underscores): epochs, stage2_epochs, batch_size, lr, stage2_lr,
    epochs = 30                      # precision, device, profile, subset_seed, data_root, plugins, ...

    [options.dasl]                   # options every dasl run of this suite gets, over dasl's defaults
    beta = 0.5

    [[variants]]                     # more runs of one method with other options, e.g. one switch at a
    name = "dasl-no-distill"         # time for an ablation; name (unique) labels the run in listings
    method = "dasl"
    options = { feature_distill = false }   # merged over [options.dasl]

The runs are (methods + variants) × every list-valued field (``datasets``, ``imbalance``, ``seeds``, or
any other field given as a list, e.g. ``profile = ["exp", "step"]``); a scalar is the same for every run.
Unknown keys, methods, options, datasets and recipes, and values of the wrong type, are errors that name
the key and the file, found before anything trains.

How a sweep runs
----------------
Every run is planned first (``plan_run``: no training) to get its run key and stage keys. A run whose
run key is in a finished run folder (its metrics.json) is skipped, so a second sweep does nothing; one
whose run key is in an unfinished folder (config.json only: the run was stopped or killed) continues
that folder from its checkpoint (``ltbench run --resume``), so an interrupted sweep resumes. Two grid
points with the same run key run once. The runs with the most work to do (stages to train, in epochs,
a frozen-feature stage counting ~1/3) go first, so that with ``--jobs N`` the short ones fill the gaps at
the end; among equals, runs that share their first stage sit together. The first run that needs a stage
trains it and the others reuse it: no run starts while another running run is training a stage it needs
that is not cached yet (it would train the same stage twice); it starts as soon as that stage's artifact
appears. Under ``--jobs N`` the runs in progress share the cores (CoreShare): a run left alone uses them all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import time
import typing
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Callable

from ..config import RunConfig, get_recipe, not_in_suites, setting_problem
from ..engine.progress import Reporter
from ..errors import ConfigError, LTBenchError, NotFoundError
from .store import RunStore, read_json

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

AXIS_ALIASES = {"methods": "method", "datasets": "dataset", "seeds": "seed"}
SUITE_KEYS = ("name", "description", "options", "variants")
NOT_IN_SUITES = not_in_suites()  # set by the sweep (RunConfig field metadata, config.setting)
VARIANT_KEYS = ("name", "method", "options")
EXECUTORS = ("local", "slurm")
HIDDEN_EXECUTORS = {"submitit-local": "local", "submitit-debug": "debug"}  # submitit's stand-ins, for tests


class SweepFailed(LTBenchError):
    """Some runs of a sweep failed (each was reported as it failed); the others finished."""

    exit_code = 1


@dataclass
class Suite:
    """A validated suite file, expanded into its runs."""

    name: str
    path: Path
    runs: list[tuple[str, RunConfig]]  # (label, config)


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


# reading suites --------------------------------------------------------------------------------------
def _check_type(path: Path, key: str, value, hint) -> None:
    types = tuple(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    types += (int,) if float in types else ()
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{path}: '{key}' must be {names} (or a list of them), got {value!r}")


def _known(path: Path, name: str, registry) -> None:
    try:
        registry.get(name)
    except NotFoundError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"cannot read suite file {path} ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML files are UTF-8 (TOML 1.0, "Spec")
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          f"save the suite file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None


def _settings(path: Path, suite: dict) -> dict:
    """The RunConfig fields of a suite (plural axis names resolved), each value or list item type-checked."""
    hints = typing.get_type_hints(RunConfig)
    allowed = [*SUITE_KEYS, *AXIS_ALIASES, *(f for f in hints if f not in NOT_IN_SUITES)]
    for key in suite:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            raise ConfigError(f"{path}: unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close else ""))
    if not isinstance(suite.get("name", ""), str):
        raise ConfigError(f"{path}: 'name' must be a string")
    settings = {AXIS_ALIASES.get(k, k): v for k, v in suite.items() if k not in SUITE_KEYS}
    settings.setdefault("seed", [0])
    written = {AXIS_ALIASES.get(k, k): k for k in suite}  # the key as the file spells it (seeds, not seed)
    for key, value in settings.items():
        name = written.get(key, key)
        if key == "plugins":
            if not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
                raise ConfigError(f"{path}: 'plugins' must be a list of paths")
            continue
        if isinstance(value, list) and not value:  # the grid would have no runs, and "success" would mean nothing
            raise ConfigError(f"{path}: '{name}' is an empty list, so the suite has no runs; give at least one "
                              f"value (or leave '{name}' out for its default)")
        for item in _as_list(value):
            _check_type(path, name, item, hints[key])
            problem = setting_problem(key, item)
            if problem:
                raise ConfigError(f"{path}: '{name}' = {item!r}: {problem}")
    return settings


def _entries(path: Path, suite: dict, methods: list[str], registry) -> list[tuple[str, str, dict]]:
    """(name, method, options) of every method and variant, options checked by the method itself."""
    method_options, variants = suite.get("options", {}), suite.get("variants", [])
    if not (isinstance(method_options, dict) and all(isinstance(o, dict) for o in method_options.values())):
        raise ConfigError(f"{path}: 'options' must be tables [options.METHOD] of option = value")
    if not (isinstance(variants, list) and all(isinstance(v, dict) for v in variants)):
        raise ConfigError(f"{path}: 'variants' must be [[variants]] tables (name, method, options)")
    entries = [(m, m, dict(method_options.get(m, {}))) for m in methods]
    where = {m: f"[options.{m}]" if method_options.get(m) else f"method '{m}'" for m in methods}
    for variant in variants:
        if set(variant) - set(VARIANT_KEYS) or "name" not in variant or "method" not in variant:
            raise ConfigError(f"{path}: each [[variants]] needs name and method (and may have options); "
                              f"got keys {', '.join(sorted(variant))}")
        entries.append((variant["name"], variant["method"],
                        {**method_options.get(variant["method"], {}), **variant.get("options", {})}))
        where[variant["name"]] = f"[[variants]] '{variant['name']}'"
    if not entries:
        raise ConfigError(f"{path}: no runs: give methods = [...] or [[variants]]")
    names = [name for name, _, _ in entries]
    if len(set(names)) < len(names):
        raise ConfigError(f"{path}: run names must be unique, got {', '.join(n for n in names if names.count(n) > 1)}")
    for method in [m for _, m, _ in entries] + list(method_options):
        _known(path, method, registry)
    for name, method, options in entries:
        try:
            registry.get(method).obj(**options)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where[name]}: {exc}") from None
    return entries


def load_suite(path: str | Path, results: str | Path = "results", data_root: str | Path | None = None) -> Suite:
    """Read, validate and expand a suite file into (label, RunConfig) pairs writing to ``results``; a
    ``data_root`` given here (``sweep --data-root``) replaces the suite's."""
    from ..data import DATASETS
    from ..registry import load_methods

    path = Path(path)
    suite = _read(path)
    settings = _settings(path, suite)
    entries = _entries(path, suite, _as_list(settings.pop("method", [])), load_methods(settings.get("plugins")))
    for dataset in _as_list(settings.get("dataset", [])):
        _known(path, dataset, DATASETS)
    for recipe in _as_list(settings.get("recipe", [])):
        try:
            get_recipe(recipe)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    axes = {k: v for k, v in settings.items() if isinstance(v, list) and k != "plugins"}
    fixed = {k: v for k, v in settings.items() if k not in axes}
    if data_root is not None:  # not part of any key (the data's fingerprint is): finished runs stay finished
        axes.pop("data_root", None)
        fixed["data_root"] = str(Path(data_root).expanduser().resolve())
    out = str(Path(results).expanduser().resolve())  # jobs may start in another working directory
    runs = []
    for name, method, options in entries:
        for values in product(*axes.values()):
            grid = dict(zip(axes, values))
            config = RunConfig(method=method, method_options=dict(options), out=out, **fixed, **grid)
            runs.append((_label(name, config, grid), config))
    return Suite(suite.get("name", path.stem), path, runs)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _label(name: str, config: RunConfig, grid: dict) -> str:
    parts = [name, config.dataset] + ([f"IF{config.imbalance:g}"] if config.imbalance is not None else [])
    parts += [f"{k}={v}" for k, v in grid.items() if k not in ("dataset", "imbalance", "seed")]
    return " ".join(parts + [f"seed {config.seed}"])


# planning --------------------------------------------------------------------------------------------
def scan_runs(results: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """run key -> run folder name, for finished runs (metrics.json, written last) and for unfinished ones
    (config.json only: stopped or killed, resumable from their checkpoint; the newest one per key)."""
    finished, unfinished = {}, {}
    folders = sorted((p for p in (Path(results) / "runs").glob("*/config.json")), key=lambda p: p.stat().st_mtime)
    for config in folders:
        metrics = config.parent / "metrics.json"
        try:
            content = read_json(metrics if metrics.exists() else config)
        except (OSError, ValueError):  # being written or damaged: neither finished nor resumable
            continue
        run_key = content.get("run_key") if isinstance(content, dict) else None
        if run_key:
            (finished if metrics.exists() else unfinished)[run_key] = config.parent.name
    return finished, unfinished


def _check_executor(executor: str) -> None:
    if executor not in (*EXECUTORS, *HIDDEN_EXECUTORS):
        raise ConfigError(f"unknown executor '{executor}' (choose {', '.join(EXECUTORS)})")


def plan_sweep(suite: Suite, results: str | Path, executor: str = "local",
               retrain_before: float | None = None) -> list[SweepRun]:
    """Plan every run (no training), mark finished and duplicate ones; the most work to do first.
    ``retrain_before`` (--retrain): run everything again, reusing no stage artifact older than that time."""
    from ..engine.runner import plan_run

    _check_executor(executor)
    if executor == "slurm":
        auto = sorted({label for label, config in suite.runs if config.precision == "auto"})
        if auto:  # keys include the precision, and 'auto' would resolve on this (login) machine
            raise ConfigError(f"{suite.path}: set precision = \"bf16\" (or fp16, fp32) for a slurm sweep: 'auto' "
                              f"resolves on the machine that plans the sweep, not on the GPU nodes, so finished "
                              f"runs would not be recognised ({auto[0]}, ...)")
    (finished, unfinished), seen, runs = scan_runs(results), {}, []
    if retrain_before is not None:
        finished, unfinished = {}, {}
    for label, config in suite.runs:
        config = dataclasses.replace(config, retrain_before=retrain_before)
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


# running ---------------------------------------------------------------------------------------------
def _summary(metrics: dict) -> dict:
    return {"run_name": metrics["run_name"], "acc": metrics["acc"],
            "reused": [stage["name"] for stage in metrics["stages"] if stage.get("reused")]}


def run_one(config: dict) -> dict:
    """A run in a worker (spawned process or submitit job), quietly; returns what the sweep prints."""
    from ..engine.runner import execute

    if _SHARE is None:  # a submitit job: the cores slurm gave it
        return _summary(execute(RunConfig(**config), Reporter(quiet=True)))
    with _SHARE:
        return _summary(execute(RunConfig(**config), _SHARE.reporter()))


class CoreShare:
    """The cores of a --jobs N pool, shared among the runs in progress (a count in shared memory).

    Each run takes cores // (runs in progress) torch threads, re-read at every training step: while N runs
    go side by side each has its share, and a run left alone (the last long one of a sweep) gets them all
    instead of leaving cores idle. Thread counts change float rounding, not the expected result.
    """

    def __init__(self, running, cores: int):
        self.running, self.cores = running, cores

    def __enter__(self) -> CoreShare:
        with self.running.get_lock():
            self.running.value += 1
        self.rebalance()
        return self

    def __exit__(self, *exc) -> None:
        with self.running.get_lock():
            self.running.value -= 1

    def rebalance(self) -> None:
        import torch

        threads = max(1, self.cores // max(1, self.running.value))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def reporter(self) -> Reporter:
        return _Rebalancing(self)


class _Rebalancing(Reporter):
    """A quiet Reporter that lets the run take its share of the cores after every training step."""

    def __init__(self, share: CoreShare):
        super().__init__(quiet=True)
        self.share = share

    @contextlib.contextmanager
    def stage(self, *args, **kwargs):
        with super().stage(*args, **kwargs) as bar:
            advance = bar.step

            def step(step: int, images: int) -> None:
                advance(step, images)
                self.share.rebalance()

            bar.step = step
            yield bar


_SHARE: CoreShare | None = None  # set in --jobs N pool workers


def _join_pool(running, cores: int) -> None:
    global _SHARE
    _SHARE = CoreShare(running, cores)


@dataclass
class _Finished:
    """The serial backend's job: already run when submitted."""

    value: dict | None = None
    error: BaseException | None = None

    def done(self) -> bool:
        return True

    def result(self) -> dict:
        if self.error is not None:
            raise self.error
        return self.value


class _Serial:
    """--jobs 1: runs in this process, one after the other, with progress bars."""

    def __init__(self, reporter):
        self.reporter = reporter

    def submit(self, config: dict) -> _Finished:
        from ..engine.interrupt import RunInterrupted
        from ..engine.runner import execute

        try:
            return _Finished(_summary(execute(RunConfig(**config), self.reporter)))
        except RunInterrupted:  # Ctrl-C or SIGTERM stops the sweep, not just this run
            raise
        except Exception as exc:  # noqa: BLE001  one failed run must not stop the sweep
            return _Finished(error=exc)


class _Pool:
    """--jobs N: N spawned worker processes sharing the cores (CoreShare)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = self._start()

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_join_pool,
                                   initargs=(context.Value("i", 0), cores))

    def submit(self, config: dict):
        try:
            return self.pool.submit(run_one, config)
        except BrokenProcessPool:  # a worker died: its runs failed (and were reported); go on with new workers
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()
            return self.pool.submit(run_one, config)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class SlurmOptions:
    """Per-job resources of the slurm executor (the CLI's --partition, --gpus-per-job, ...)."""

    partition: str | None = None
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    timeout_min: int = 24 * 60
    mem_gb: int | None = None


class _Submitit:
    """One submitit job per run (slurm, or submitit's local/debug executors for tests)."""

    def __init__(self, cluster: str, folder: Path, options: SlurmOptions, name: str):
        try:
            import submitit
        except ImportError:
            raise ConfigError("the slurm executor needs submitit: pip install 'ltbench[slurm]'") from None
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        parameters = {"name": f"ltbench-{name}", "timeout_min": options.timeout_min,
                      "gpus_per_node": options.gpus_per_job, "cpus_per_task": options.cpus_per_job}
        if options.mem_gb:
            parameters["mem_gb"] = options.mem_gb
        if options.partition:
            parameters["slurm_partition"] = options.partition
        self.executor.update_parameters(**parameters)

    def submit(self, config: dict):
        return self.executor.submit(run_one, config)


SUBMITIT_RULE = "-" * 22  # submitit puts a job's traceback between two such rules, then where its logs are


def _one_line(exc: BaseException) -> str:
    """The error in one line: the last line of a submitit job's traceback, else the message."""
    if isinstance(exc, BrokenProcessPool):  # concurrent.futures' words for a worker that was killed
        return ("its worker process died (killed: out of memory?), stopping the runs beside it too; run the "
                "sweep again to resume them")
    text = str(exc)
    wrapped = SUBMITIT_RULE in text
    if wrapped:
        text = text.split(SUBMITIT_RULE)[-2]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    return message if wrapped or isinstance(exc, LTBenchError) else f"{type(exc).__name__}: {message}"


def schedule(runs: list[SweepRun], backend, store: RunStore, jobs: int, log: Callable[[str], None],
             poll_s: float = 1.0) -> tuple[int, list[str]]:
    """Start runs, at most ``jobs`` at once, the most remaining work first (ties: in plan order), so that
    short runs fill the gaps at the end instead of a long one running last while workers idle; never one that
    needs a stage another running run is still training (it starts once that stage's artifact exists).
    Returns (runs done, labels of failed runs)."""
    pending, running, failed, done = list(runs), [], [], 0
    while pending or running:
        busy = set().union(*(run.uncached(store) for run, _ in running))
        candidates = [(run, run.uncached(store)) for run in pending] if len(running) < jobs else []
        for run, needs in sorted(candidates, key=lambda item: -item[0].work_of(item[1])):  # longest first
            if len(running) >= jobs:
                break
            if needs & busy:
                continue
            pending.remove(run)
            log(f"start  {run.label}")
            running.append((run, backend.submit(dataclasses.asdict(run.config))))
            busy |= needs
        finished = [(run, job) for run, job in running if job.done()]
        if not finished:
            time.sleep(poll_s)
        for run, job in finished:
            running.remove((run, job))
            try:
                summary = job.result()
            except Exception as exc:  # noqa: BLE001  reported, counted, and the sweep goes on
                failed.append(run.label)
                log(f"FAILED {run.label}: {_one_line(exc)}")
                continue
            done += 1
            reused = f", reused {', '.join(summary['reused'])}" if summary["reused"] else ""
            log(f"done   {run.label}: acc {summary['acc']:.2f}{reused} -> runs/{summary['run_name']}")
    return done, failed


def run_sweep(suite: Suite, runs: list[SweepRun], results: str | Path, executor: str = "local", jobs: int | None = None,
              slurm: SlurmOptions | None = None, reporter=None, log: Callable[[str], None] = print,
              poll_s: float = 1.0) -> dict[str, int]:
    """Execute the runs not yet finished; returns the counts of runs done and skipped (finished before).

    ``jobs``: runs at once (local default 1; slurm/submitit default: all that may start).
    """
    from ..engine.interrupt import RunInterrupted

    _check_executor(executor)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    todo = [run for run in runs if not run.done and not run.duplicate_of]
    if executor == "local":
        jobs = jobs or 1
        backend = _Serial(reporter) if jobs == 1 else _Pool(jobs)
    else:
        folder = Path(results) / "sweeps" / suite.name / "slurm_logs"
        backend = _Submitit(HIDDEN_EXECUTORS.get(executor, "slurm"), folder, slurm or SlurmOptions(), suite.name)
        log(f"submitit logs: {folder}")
        jobs = jobs or len(todo) or 1
    try:
        done, failed = schedule(todo, backend, RunStore(results), jobs, log, poll_s)
    except RunInterrupted as exc:  # its message says how to resume that run; a new sweep does it too
        exc.args = (f"{exc}; or run the sweep again: it resumes unfinished runs and skips finished ones",)
        raise
    finally:
        if isinstance(backend, _Pool):
            backend.close()
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(todo)} runs failed ({', '.join(failed[:3])}"
                          f"{', ...' if len(failed) > 3 else ''}); fix and re-run the sweep: finished runs are skipped")
    return {"done": done, "skipped": len(runs) - len(todo)}
