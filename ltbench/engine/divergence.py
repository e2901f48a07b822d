"""Runs that finish although their training blew up.

The loop stops a run at the first NaN or infinite loss (``TrainingDiverged``). A loss can also explode and stay
finite: 1.7e10 after three epochs of ``--batch-size 1000000`` on digits-lt (a learning rate scaled x31,250);
the run then ends and its numbers look like any other's. ``why_diverged`` names such a run from what it wrote,
and the run marks it in metrics.json (``"diverged": true`` with the reason) and warns.

The thresholds: every built-in loss is a cross-entropy (re-weighted, smoothed, with margins or distillation
terms), which costs ln C for a uniform guess over C classes and falls from there as a model learns. A stage whose
last epoch's mean training loss is over 100 times both its first epoch's and ln C has blown up (re-weighting from
a deferred epoch on raises a loss a few times, not a hundred), and so has one above 10,000 ln C whatever its
first epoch was (a one-epoch stage). Test accuracy at chance alone is not taken as a sign: a short or
hard run sits at chance honestly.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

GROWTH = 100  # last epoch's loss over max(first epoch's, ln C)
CEILING = 10_000  # last epoch's loss over ln C


def why_diverged(epochs_log: Path, logits: torch.Tensor, num_classes: int) -> str | None:
    """Why a finished run counts as diverged (its test logits are not finite, or a stage it trained ended at an
    exploded training loss, per ``epochs_log``), or None."""
    if not bool(torch.isfinite(logits).all()):
        return "the final model's test logits are not all finite"
    uniform = math.log(max(num_classes, 2))
    for stage, (first, last) in _first_and_last_losses(epochs_log).items():
        if last > GROWTH * max(first, uniform) or last > CEILING * uniform:
            return (f"stage '{stage}' ended at a training loss of {last:.4g} (its first epoch: {first:.4g}; a uniform "
                    f"guess costs ln {num_classes} = {uniform:.3g})")
    return None


def _first_and_last_losses(epochs_log: Path) -> dict[str, tuple[float, float]]:
    """Stage name -> (first, last) mean training loss in the run's epochs.jsonl; what cannot be read is left out
    (a damaged log is not this check's to report)."""
    losses: dict[str, tuple[float, float]] = {}
    try:
        lines = Path(epochs_log).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return losses
    for line in lines:
        try:
            record = json.loads(line)
            stage, loss = record["stage"], float(record["loss"])
        except (ValueError, TypeError, KeyError):
            continue
        losses[stage] = (losses.get(stage, (loss, loss))[0], loss)
    return losses
