"""Sweeps: a TOML suite describes a grid of runs; finished runs are skipped and shared stages train once.

suite.py reads and validates suite files, plan.py plans every run (no training) and orders them, execute.py
starts them on a backend (backends.py: in process, a --jobs N pool sharing the cores, or submitit/slurm).
The suite format and how a sweep runs: docs/sweeps.md (benchmarks/SUITES.md for the committed suites).
"""
from .backends import CoreShare, SlurmOptions
from .execute import SweepFailed, run_sweep, schedule
from .plan import SweepRun, describe, plan_sweep, scan_runs
from .suite import Suite, load_suite

__all__ = ["CoreShare", "SlurmOptions", "Suite", "SweepFailed", "SweepRun", "describe", "load_suite", "plan_sweep",
           "run_sweep", "scan_runs", "schedule"]
