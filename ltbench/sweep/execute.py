"""Running a planned sweep: start runs as backends free up, never two that would train the same stage at
once, report each as it finishes, and fail at the end if any failed (docs/sweeps.md). A run stopped by the
time limit (--time-limit) starts no further run; the sweep then exits with status 75."""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from ..engine import interrupt
from ..engine.interrupt import TimeLimitReached
from ..engine.store import RunStore
from ..errors import ConfigError, LTBenchError
from .backends import PoolBackend, SerialBackend, SlurmOptions, SubmititBackend
from .plan import HIDDEN_EXECUTORS, SweepRun, check_executor
from .suite import Suite


class SweepFailed(LTBenchError):
    """Some runs of a sweep failed (each was reported as it failed); the others finished."""

    exit_code = 1


SUBMITIT_RULE = "-" * 22  # submitit puts a job's traceback between two such rules, then where its logs are


def failure_line(exc: BaseException) -> str:
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
    Returns (runs done, labels of failed runs). Once a run stopped by its time limit, or the limit passed,
    no run starts: TimeLimitReached when the runs in progress have stopped."""
    pending, running, failed, stopped, done = list(runs), [], [], [], 0
    while pending or running:
        now = interrupt.clock()
        out_of_time = bool(stopped) or any(run.config.deadline is not None and now >= run.config.deadline
                                           for run in pending)
        if out_of_time and not running:
            break
        busy = set().union(*(run.uncached(store) for run, _ in running))
        may_start = len(running) < jobs and not out_of_time
        candidates = [(run, run.uncached(store)) for run in pending] if may_start else []
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
            except TimeLimitReached as exc:  # its checkpoint is saved: the same sweep resumes it
                stopped.append(run.label)
                log(f"stopped {run.label}: {failure_line(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001  reported, counted, and the sweep goes on
                failed.append(run.label)
                log(f"FAILED {run.label}: {failure_line(exc)}")
                continue
            done += 1
            reused = f", reused {', '.join(summary['reused'])}" if summary["reused"] else ""
            log(f"done   {run.label}: acc {summary['acc']:.2f}{reused} -> runs/{summary['run_name']}")
    if pending or stopped:
        failures = f", {len(failed)} failed ({', '.join(failed[:3])})" if failed else ""
        raise TimeLimitReached(f"stopped by the time limit: {done} run(s) done, {len(stopped)} stopped at an epoch "
                               f"boundary with a checkpoint, {len(pending)} not started{failures}; continue with the "
                               f"same `ltbench sweep` command: it resumes stopped runs and skips finished ones")
    return done, failed


def run_sweep(suite: Suite, runs: list[SweepRun], results: str | Path, executor: str = "local", jobs: int | None = None,
              slurm: SlurmOptions | None = None, reporter=None, log: Callable[[str], None] = print,
              poll_s: float = 1.0) -> dict[str, int]:
    """Execute the runs not yet finished; returns the counts of runs done and skipped (finished before).

    ``jobs``: runs at once (local default 1; slurm/submitit default: all that may start).
    """
    from ..engine.interrupt import RunInterrupted

    check_executor(executor)
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    todo = [run for run in runs if not run.done and not run.duplicate_of]
    if executor == "local":
        jobs = jobs or 1
        backend = SerialBackend(reporter) if jobs == 1 else PoolBackend(jobs)
    else:
        folder = Path(results) / "sweeps" / suite.name / "slurm_logs"
        backend = SubmititBackend(HIDDEN_EXECUTORS.get(executor, "slurm"), folder, slurm or SlurmOptions(), suite.name)
        log(f"submitit logs: {folder}")
        jobs = jobs or len(todo) or 1
    try:
        done, failed = schedule(todo, backend, RunStore(results), jobs, log, poll_s)
    except TimeLimitReached:  # its message says how to continue the sweep
        raise
    except RunInterrupted as exc:  # its message says how to resume that run; a new sweep does it too
        exc.args = (f"{exc}; or run the sweep again: it resumes unfinished runs and skips finished ones",)
        raise
    finally:
        if isinstance(backend, PoolBackend):
            backend.close()
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(todo)} runs failed ({', '.join(failed[:3])}"
                          f"{', ...' if len(failed) > 3 else ''}); fix and re-run the sweep: finished runs are skipped")
    return {"done": done, "skipped": len(runs) - len(todo)}
