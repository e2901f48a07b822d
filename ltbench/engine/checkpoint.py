"""Stage artifacts and run checkpoints: atomic writes, ``torch.load(weights_only=True)`` reads.

A run's checkpoints live in ``<run>/checkpoints/``: ``last.pt`` (newest) and ``prev.pt`` (the one before).
A new checkpoint is written to a temp file (fsync), then ``last.pt`` becomes ``prev.pt`` and the temp file
becomes ``last.pt`` (two renames). Killed at any moment, the folder holds at least one complete
checkpoint; reading falls back from an unreadable ``last.pt`` to ``prev.pt`` with one warning line.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import LTBenchError
from ..files import atomic_write, fsync_dir, read_json, remove_temp_files, write_error, write_json

CHECKPOINT_DIR = "checkpoints"
LAST, PREV = "last.pt", "prev.pt"
FORMAT = 1


class CheckpointError(LTBenchError):
    """A checkpoint or artifact that cannot be read or does not fit."""


class CorruptFileError(CheckpointError):
    """A file that exists but is truncated or not a torch checkpoint."""


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # zip errors, unpickling errors, EOF: all mean "not a complete checkpoint"
        raise CorruptFileError(f"{path} is truncated or corrupt ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CorruptFileError(f"{path} is not an ltbench checkpoint (it holds a {type(state).__name__})")
    return state


# stage artifacts ------------------------------------------------------------------------------------
def save_artifact(folder: Path, model, method, meta: dict) -> None:
    """A finished stage: model weights + method state, then meta.json (its presence = complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_temp_files(folder)  # left by a run killed while writing this artifact
    save_state(folder / "model.pt", {"model": model.state_dict(), "method": method.state_dict()})
    write_json(folder / "meta.json", meta)


def load_artifact(folder: Path, model, method, device, state: dict | None = None) -> dict:
    """Load a stage artifact into ``model`` and ``method`` (``state``: already read by ``load_state``)."""
    state = state if state is not None else load_state(folder / "model.pt", device)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    backbone_missing = [k for k in missing if k.startswith("backbone.")]
    if backbone_missing or unexpected:
        raise CheckpointError(f"stage artifact {folder} does not fit this model (missing {backbone_missing[:3]}, "
                              f"unexpected {unexpected[:3]}); delete the folder to retrain the stage")
    method.load_state_dict(state.get("method", {}))
    return read_json(folder / "meta.json")


# random number generators ---------------------------------------------------------------------------
def capture_rng(generator: torch.Generator | None = None) -> dict:
    """Every RNG a stage may draw from, as tensors and plain types (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["internal"].tolist()),
                     python_state["gauss_next"]))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"].cpu())


# run checkpoints ------------------------------------------------------------------------------------
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write ``last.pt`` atomically, keeping the previous one as ``prev.pt`` until the new one is complete."""
    folder = checkpoint_dir(run_dir)
    last, prev = folder / LAST, folder / PREV
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    try:
        folder.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        if last.exists():
            os.replace(last, prev)  # killed right here: last.pt is missing, prev.pt is complete
        os.replace(tmp, last)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # disk full: the checkpoints before this one stay as they were
        if isinstance(exc, OSError):
            raise write_error(last, exc) from None
        raise
    fsync_dir(folder)
    return last


def load_checkpoint(run_dir: Path, device, warn=print) -> tuple[dict, Path] | None:
    """The newest readable checkpoint and its path; None when the run never saved one.

    An unreadable ``last.pt`` falls back to ``prev.pt`` (one warning line); when no file is readable,
    a CheckpointError names them and says what to do.
    """
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        remove_temp_files(folder)
    candidates = [p for p in (folder / LAST, folder / PREV) if p.exists()]
    if not candidates:
        return None
    problems = []
    for path in candidates:
        try:
            state = load_state(path, device)
            if state.get("format") != FORMAT or "stage_index" not in state:
                raise CorruptFileError(f"{path} is not an ltbench run checkpoint (format {state.get('format')})")
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warn(f"{problems[0]}; resuming from the older {path.name} instead (it is kept until a new one is complete)")
        return state, path
    raise CheckpointError(f"cannot resume: no readable checkpoint ({'; '.join(problems)}); start the run again under "
                          f"a new --run-name (or delete {Path(run_dir)} first)")


class ResumePoint:
    """The checkpoint a resumed run continues from, and the file it was read from."""

    def __init__(self, checkpoint: dict, path: Path):
        self.checkpoint, self.path = checkpoint, Path(path)

    @property
    def stage_index(self) -> int:
        return int(self.checkpoint["stage_index"])
