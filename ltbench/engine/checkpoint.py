"""Stage artifacts and checkpoints: atomic writes, ``torch.load(weights_only=True)`` reads."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from ..errors import LTBenchError
from ..results.store import atomic_write, read_json, write_json


class CheckpointError(LTBenchError):
    """A checkpoint or artifact that cannot be read."""


def save_state(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_state(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}); delete it and "
                              f"re-run (an older good checkpoint, if any, is used)") from None


def save_artifact(folder: Path, model, method, meta: dict) -> None:
    """A finished stage: model weights + method state, then meta.json (its presence = complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_state(folder / "model.pt", {"model": model.state_dict(), "method": method.state_dict()})
    write_json(folder / "meta.json", meta)


def load_artifact(folder: Path, model, method, device) -> dict:
    state = load_state(folder / "model.pt", device)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    backbone_missing = [k for k in missing if k.startswith("backbone.")]
    if backbone_missing or unexpected:
        raise CheckpointError(f"stage artifact {folder} does not fit this model (missing {backbone_missing[:3]}, "
                              f"unexpected {unexpected[:3]}); delete the folder to retrain the stage")
    method.load_state_dict(state.get("method", {}))
    return read_json(folder / "meta.json")
