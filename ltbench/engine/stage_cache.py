"""The stage cache (``<out>/stages/<key>/``): claim a stage (reuse its artifact, or hold its lock and train
it), load a reused artifact, save a trained one. A lock file per key makes concurrent runs train a shared
stage once: the others wait, then reuse it.
"""
from __future__ import annotations

import datetime as dt
import enum
import time
from dataclasses import dataclass
from typing import Callable

from ..config import Stage
from ..method import Method
from ..models.heads import LTModel
from .checkpoint import CheckpointError, load_artifact, load_state, save_artifact
from .distributed import Distributed
from .locks import HoldsLock, StageLock, describe_holder
from .progress import Reporter
from .store import RunStore

LOCK_POLL_S = 0.5


class Decision(enum.Enum):
    REUSE = "reuse"  # a complete, readable artifact exists
    TRAIN = "train"  # this run trains the stage (rank 0 holds its lock)
    WAIT = "wait"  # another run is training it


@dataclass
class Claim(HoldsLock):
    """What ``StageCache.claim`` decided. On rank 0 it carries the held lock (TRAIN) or the artifact's
    weights, already read (REUSE); use it as a context manager to release the lock."""

    decision: Decision
    lock: StageLock | None = None
    artifact_state: dict | None = None


class StageCache:
    """Claims, loads and saves the stage artifacts of one run (every rank calls; rank 0 touches files)."""

    def __init__(self, store: RunStore, run_name: str, dist: Distributed, reporter: Reporter, device,
                 retrain_before: float | None = None):
        self.store, self.run_name, self.dist, self.reporter = store, run_name, dist, reporter
        self.device, self.retrain_before = device, retrain_before
        self._announced: set = set()  # waits and corrupt artifacts already reported

    def claim(self, label: str, key: str, give_up: Callable[[], Exception | None]) -> Claim:
        """REUSE when a complete artifact exists (waiting while another run trains it), else TRAIN with the
        stage's lock held by rank 0. All ranks poll together, so no collective waits long; ``give_up``
        returns the exception to raise when a stop was requested while waiting."""
        while True:
            mine: Claim | None = None

            def decide() -> Decision:
                nonlocal mine
                mine = self._try_claim(label, key)
                return mine.decision

            decision = self.dist.on_main(decide)
            if decision is not Decision.WAIT:
                return mine if mine is not None else Claim(decision)
            time.sleep(LOCK_POLL_S)
            stop = give_up()
            if stop is not None:
                raise stop

    def _try_claim(self, label: str, key: str) -> Claim:
        state = self._read_reusable(key, label)
        if state is not None:
            return Claim(Decision.REUSE, artifact_state=state)
        lock = StageLock(self.store.stage_lock(key), owner=self.run_name)
        if lock.try_acquire():
            if self.store.has_stage(key):
                state = self._read_reusable(key, label)
                if state is not None:  # finished between our looks
                    lock.release()
                    return Claim(Decision.REUSE, artifact_state=state)
                (self.store.stage_dir(key) / "meta.json").unlink(missing_ok=True)  # corrupt or --retrain
            return Claim(Decision.TRAIN, lock=lock)
        held = lock.read()
        if held is None:  # released meanwhile
            return Claim(Decision.WAIT)
        raw, info, age = held
        reason = lock.stale_reason(info, age)
        if reason:
            self.reporter.log(f"{label}: removing the stale lock of {describe_holder(info)}: {reason}")
            lock.break_stale(raw)
        elif key not in self._announced:
            self._announced.add(key)
            self.reporter.log(f"{label}: waiting for {describe_holder(info)}, which is training it ({lock.path})")
        return Claim(Decision.WAIT)

    def _reusable(self, key: str) -> bool:
        """A complete artifact, not older than --retrain's start (the artifacts this run trains are newer)."""
        if not self.store.has_stage(key):
            return False
        before = self.retrain_before
        return before is None or (self.store.stage_dir(key) / "meta.json").stat().st_mtime >= before

    def _read_reusable(self, key: str, label: str) -> dict | None:
        """The weights of a reusable, readable artifact; None when there is none (a corrupt one is reported)."""
        if not self._reusable(key):
            return None
        try:
            return load_state(self.store.stage_dir(key) / "model.pt", self.device)
        except CheckpointError as exc:
            if ("corrupt", key) not in self._announced:
                self._announced.add(("corrupt", key))
                self.reporter.warn(f"stage artifact {exc}; retraining {label}")
            return None

    def load(self, claim: Claim, key: str, model: LTModel, hooks: Method) -> dict:
        """Load a claimed artifact into ``model`` and ``hooks`` (every rank); returns its meta.json."""
        state = claim.artifact_state if self.dist.is_main else None
        claim.artifact_state = None
        return load_artifact(self.store.stage_dir(key), model, hooks, self.device, state)

    def save(self, key: str, stage: Stage, model: LTModel, hooks: Method, metrics: dict, seconds: float) -> None:
        """Rank 0: the trained stage as an artifact, exactly what training produced."""
        if not self.dist.is_main:
            return
        save_artifact(self.store.stage_dir(key), model, hooks,
                      {"key": key, "stage": stage.spec(), "trained_by": self.run_name, "metrics": metrics,
                       "seconds": seconds, "world_size": self.dist.world,
                       "created": dt.datetime.now().isoformat(timespec="seconds")})
