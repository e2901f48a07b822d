"""Stopping a run cleanly, with a checkpoint and the command that continues it: on SIGTERM / SIGINT (SLURM
preemption, Ctrl-C, `kill`) after the current step, and before a time budget (``--time-limit``) runs out,
at an epoch boundary.

Torch-free: the CLI parses ``--time-limit`` with it.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import threading
import time
from pathlib import Path

from ..errors import ConfigError, LTBenchError

TIME_LIMIT_ENV = "LTBENCH_TIME_LIMIT"
TIME_LIMIT_EXIT = 75  # EX_TEMPFAIL (sysexits.h): stopped by its time budget, checkpoint saved; run again to continue
EPOCH_MARGIN = 1.25  # the next epoch is estimated at this many times the longest one so far (of its stage)

# a second Ctrl-C this long after the first stops at once (torchrun forwards the terminal's SIGINT to
# its workers, which then see it twice within milliseconds: that must not skip the checkpoint)
FORCE_AFTER_S = 2.0


class RunInterrupted(LTBenchError):
    """Stopped by a signal; a checkpoint was saved (or the run had not trained anything yet)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class TimeLimitReached(RunInterrupted):
    """Stopped at an epoch boundary because the next epoch would not end inside the time budget; the
    checkpoint is saved. Exit status 75 (EX_TEMPFAIL): not a failure, run the same command again."""

    def __init__(self, message: str):
        super().__init__(message)
        self.exit_code = TIME_LIMIT_EXIT


# the time budget ------------------------------------------------------------------------------------
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?"
                       r"(?:(\d+(?:\.\d+)?)s)?")
_CLOCK = re.compile(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})")  # SLURM's [D-]H:MM:SS


def parse_time_limit(text: str) -> float:
    """Seconds of a time limit: ``2h20m``, ``90m``, ``45s``, ``1.5h``, ``1d2h`` or SLURM's ``[D-]H:MM:SS``."""
    given = str(text).strip().lower().replace(" ", "")
    seconds = None
    match = _DURATION.fullmatch(given)
    if given and match and any(match.groups()):
        seconds = sum(float(v) * _UNITS[unit] for v, unit in zip(match.groups(), "dhms") if v)
    match = _CLOCK.fullmatch(given)
    if match:
        days, hours, minutes, secs = (int(v) if v else 0 for v in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds is None or not seconds > 0:
        raise ConfigError(f"--time-limit {text!r}: give a duration with units, e.g. 2h20m, 90m, 45s (or H:MM:SS); "
                          f"it is the budget of the whole command (also ${TIME_LIMIT_ENV})")
    return seconds


def clock() -> float:
    """Wall-clock seconds (a deadline is shared by processes: DDP ranks, sweep workers). Tests replace it."""
    return time.time()


_IMPORTED = time.time()


def process_start() -> float:
    """When this process started: the budget counts the whole command, imports and data loading included."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):  # not Linux: when ltbench was imported
        return _IMPORTED


def deadline_after(text: str | None) -> float | None:
    """The deadline (wall clock) of ``--time-limit TEXT``, counted from the start of this process."""
    return None if text is None else process_start() + parse_time_limit(text)


def clock_time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class TimeBudget:
    """A deadline and the epochs measured in this process: at an epoch boundary, whether the work up to the
    next boundary (an epoch and its checkpoint, times EPOCH_MARGIN; a stage's last epoch counts twice, for
    the stage's evaluation and artifact) would still end before the deadline."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.laps: dict[str, list[float]] = {}  # stage key -> seconds of each epoch (with its checkpoint)
        self.last_estimate, self.last_ahead = 0.0, 1.0  # of the last time_up: for the message

    @staticmethod
    def now() -> float:
        return clock()

    def lap(self, stage: str, seconds: float) -> None:
        self.laps.setdefault(stage, []).append(seconds)

    def estimate(self, stage: str | None) -> float:
        """Seconds of one epoch of ``stage``: its longest here, else the longest of any stage (0: none yet)."""
        laps = self.laps.get(stage) or [s for stage_laps in self.laps.values() for s in stage_laps]
        return max(laps, default=0.0) * EPOCH_MARGIN

    def passed(self) -> bool:
        return clock() >= self.deadline

    def time_up(self, epochs_ahead: float, stage: str | None = None) -> bool:
        """Whether ``epochs_ahead`` epochs of ``stage`` would end after the deadline (0: only whether it passed).
        The first epoch of a process is never refused while the deadline lies ahead: nothing is measured yet."""
        self.last_estimate, self.last_ahead = epochs_ahead * self.estimate(stage), epochs_ahead
        return clock() + self.last_estimate >= self.deadline

    def limit(self) -> str:
        """The budget as a --time-limit value (counted from this process's start, like the one given)."""
        return duration(self.deadline - process_start())

    def describe(self) -> str:
        """``the time limit (14:20:00: 1m05s left, the next epoch would need about 1m30s)``"""
        left = self.deadline - clock()
        if left <= 0:
            return f"the time limit ({clock_time(self.deadline)}: passed)"
        ahead = "the next epoch, the stage's last, and the stage's end" if self.last_ahead > 1 else "the next epoch"
        return (f"the time limit ({clock_time(self.deadline)}: {duration(left)} left, {ahead} would need about "
                f"{duration(self.last_estimate)})")


_budget: TimeBudget | None = None  # one per process: a sweep's runs in one process share the measured epochs


def budget_for(deadline: float | None) -> TimeBudget | None:
    global _budget
    if deadline is None:
        return None
    if _budget is None or _budget.deadline != deadline:
        _budget = TimeBudget(deadline)
    return _budget


_received: int | None = None  # a process that was told to stop starts no further run (sweeps in one process)


def refuse_if_stopped() -> None:
    if _received is not None:
        name = signal.Signals(_received).name
        raise RunInterrupted(f"not started: this process received {name} during an earlier run", _received)


class GracefulStop:
    """Context manager: while inside, SIGTERM/SIGINT only set ``requested``; the loop polls it. With a
    ``budget`` (``--time-limit``), the runner also asks at each epoch boundary whether time is up."""

    def __init__(self, budget: TimeBudget | None = None):
        self.signum: int | None = None
        self.budget = budget
        self.timed_out = False  # set (on every rank) when the ranks agreed to stop for the time limit
        self._first_at = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def time_up(self, epochs_ahead: float, stage: str | None = None) -> bool:
        return self.budget is not None and self.budget.time_up(epochs_ahead, stage)

    @property
    def name(self) -> str:
        if self.timed_out and not self.signum:
            return self.budget.describe() if self.budget else "the time limit"
        return signal.Signals(self.signum).name if self.signum else "signal"

    def error(self, message: str) -> RunInterrupted:
        """The exception that ends the run (``message`` says where and how to continue)."""
        if self.timed_out and not self.signum:
            return TimeLimitReached(message)
        return RunInterrupted(message, self.signum or signal.SIGTERM)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT and time.monotonic() - self._first_at > FORCE_AFTER_S:
            raise KeyboardInterrupt
        if self.signum is None:
            global _received
            self.signum, self._first_at, _received = signum, time.monotonic(), signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
