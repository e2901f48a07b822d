"""``--tensorboard``: the run's per-epoch records (the lines of epochs.jsonl) and each stage's test metrics as
TensorBoard scalars in RUN/tensorboard/, the convention PyTorch users read with ``tensorboard --logdir``."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

EPOCH_SCALARS = ("loss", "train_acc", "lr", "images_per_s")
STAGE_SCALARS = ("acc", "many_acc", "medium_acc", "few_acc", "ece", "nll")
INSTALL = "pip install 'ltbench[tensorboard]' (or pip install tensorboard)"


def check_available() -> None:
    """Before anything is written: a run asked for TensorBoard logs must be able to write them."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  needs the tensorboard package
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL}") from None


class ScalarLog:
    """Writes scalars tagged ``<stage>/<name>``: epochs on the x axis within each stage."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def epoch(self, record: dict) -> None:
        for name in EPOCH_SCALARS:
            if record.get(name) is not None:
                self.writer.add_scalar(f"{record['stage']}/{name}", record[name], record["epoch"])
        self.writer.flush()

    def stage_end(self, stage: str, epochs: int, metrics: dict | None) -> None:
        for name in STAGE_SCALARS:
            if metrics and metrics.get(name) is not None:
                self.writer.add_scalar(f"{stage}/test_{name}", metrics[name], epochs)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
