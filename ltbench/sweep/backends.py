"""Where a sweep's runs execute: in this process (--jobs 1), a pool of spawned workers sharing the cores
(--jobs N, CoreShare), or one submitit job per run (slurm, ``RunJob``: requeued when it reaches its time
limit). Each backend's ``submit(config)`` returns a job with ``done()`` and ``result()`` (the summary the
sweep prints)."""
from __future__ import annotations

import contextlib
import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..engine.progress import Reporter
from ..errors import ConfigError
from ..files import read_json
from ..record import CONFIG_FILE, METRICS_FILE


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


class SerialBackend:
    """--jobs 1: runs in this process, one after the other, with progress bars."""

    def __init__(self, reporter):
        self.reporter = reporter

    def submit(self, config: dict) -> _Finished:
        from ..engine.interrupt import RunInterrupted, TimeLimitReached
        from ..engine.runner import execute

        try:
            return _Finished(_summary(execute(RunConfig(**config), self.reporter)))
        except TimeLimitReached as exc:  # the sweep starts no further run and says so (execute.schedule)
            return _Finished(error=exc)
        except RunInterrupted:  # Ctrl-C or SIGTERM stops the sweep, not just this run
            raise
        except Exception as exc:  # noqa: BLE001  one failed run must not stop the sweep
            return _Finished(error=exc)


class PoolBackend:
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


class RunJob:
    """A submitit job that runs one sweep run (its config, with its run name: ``plan_sweep`` names it).

    ``checkpoint`` is submitit's requeue hook (submitit/helpers.py ``Checkpointable``; called by
    core/job_environment.py's SignalHandler): when SLURM signals the job before its time limit (submitit
    asks for USR2 ``signal_delay_s`` = 90 s ahead) or preempts it, submitit calls ``checkpoint`` with the
    job's arguments and requeues what it returns: this run again, with ``resume``, which continues from its
    last checkpoint (saved at every epoch end), on whichever node the job lands next.
    """

    def __call__(self, config: dict) -> dict:
        config = {**config, "deadline": None}  # the job's budget is its slurm time limit, not the sweep's
        name = config.get("run_name")
        if config.get("resume") and name:
            run_dir = Path(config["out"]) / "runs" / name
            if (run_dir / METRICS_FILE).is_file():  # it finished just before the signal
                return _summary(read_json(run_dir / METRICS_FILE))
            if not (run_dir / CONFIG_FILE).is_file():  # requeued before its folder was written: start it
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only when empty
                config["resume"] = False
        return run_one(config)

    def checkpoint(self, config: dict):
        """The same run, resumed (None, not requeued, for a run without a name: its folder is unknown)."""
        from submitit.helpers import DelayedSubmission

        if not config.get("run_name"):
            return None
        return DelayedSubmission(RunJob(), {**config, "resume": True})


MAX_TIMEOUT_REQUEUES = 50  # submitit's default is 3: a 200-epoch stage may span more slurm time limits


class SubmititBackend:
    """One submitit job per run (slurm, or submitit's local/debug executors for tests)."""

    def __init__(self, cluster: str, folder: Path, options: SlurmOptions, name: str):
        try:
            import submitit
        except ImportError:
            raise ConfigError("the slurm executor needs submitit: pip install 'ltbench[slurm]'") from None
        self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                              slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
        parameters = {"name": f"ltbench-{name}", "timeout_min": options.timeout_min,
                      "gpus_per_node": options.gpus_per_job, "cpus_per_task": options.cpus_per_job}
        if options.mem_gb:
            parameters["mem_gb"] = options.mem_gb
        if options.partition:
            parameters["slurm_partition"] = options.partition
        self.executor.update_parameters(**parameters)

    def submit(self, config: dict):
        return self.executor.submit(RunJob(), config)
