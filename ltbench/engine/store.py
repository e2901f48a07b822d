"""Run folders and stage artifacts on disk: the engine's write layer. A run folder is never overwritten;
its files are written atomically (ltbench.files) in the format of ltbench.record, which tables, plots and
sweeps read."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import ConfigError, RunExistsError
from ..files import expand_user


class RunStore:
    """``<out>/runs/<run-name>/`` per run, ``<out>/stages/<key>/`` per reusable stage artifact."""

    def __init__(self, out: str | Path):
        self.root = expand_user(out, "--results")
        self.runs = self.root / "runs"
        self.stages = self.root / "stages"

    def check_writable(self) -> None:
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            self.stages.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.runs, prefix=".probe", delete=True)
            probe.close()
        except OSError as exc:
            raise ConfigError(f"output folder {self.root} is not writable ({exc.strerror}); pass --results DIR") from None

    def create_run(self, name: str) -> Path:
        run_dir = self.runs / name
        try:
            run_dir.mkdir(parents=True, exist_ok=False)  # atomic: two runs can never claim one name
        except FileExistsError:
            raise RunExistsError(
                f"run '{name}' already exists in {self.runs}; choose another --run-name "
                f"(or add --resume to continue it if it did not finish)") from None
        return run_dir

    def run_dir(self, name: str) -> Path:
        return self.runs / name

    def stage_dir(self, key: str) -> Path:
        return self.stages / key

    def stage_lock(self, key: str) -> Path:
        return self.stages / f"{key}.lock"

    def has_stage(self, key: str) -> bool:
        return (self.stage_dir(key) / "meta.json").exists()
