"""What a run shows a person: log lines, a rich progress bar per stage, the final results table."""
from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class _StageBar:
    def __init__(self, progress: Progress, task, epochs: int):
        self.progress, self.task, self.epochs = progress, task, epochs

    def step(self, step: int, images: int) -> None:
        self.progress.advance(self.task)

    def epoch_done(self, epoch: int, stats: dict) -> None:
        self.progress.update(self.task, epoch=f"{epoch + 1}/{self.epochs}", loss=f"{stats['loss']:.3f}",
                             acc=f"{stats['train_acc']:.1f}", ips=f"{stats['images_per_s']:.0f}")


class Reporter:
    """Prints to a rich console (stderr for progress, so piped stdout stays clean)."""

    def __init__(self, console: Console | None = None, quiet: bool = False, silent: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet or silent
        self.silent = silent  # not even warnings (DDP ranks other than 0)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        """Shown even with --quiet (one line): something was repaired or skipped."""
        if not self.silent:
            self.console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, index: int, total: int, stage, key: str, steps_per_epoch: int, done_epochs: int = 0,
              done_steps: int = 0):
        progress = Progress(
            TextColumn(f"stage {index + 1}/{total} {stage.name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]} acc {task.fields[acc]}% "
                       "{task.fields[ips]} img/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=self.quiet, transient=False)
        with progress:
            task = progress.add_task("train", total=stage.epochs * steps_per_epoch,
                                     completed=done_epochs * steps_per_epoch + done_steps,
                                     epoch=f"{done_epochs}/{stage.epochs}", loss="-", acc="-", ips="-")
            yield _StageBar(progress, task, stage.epochs)

    def summary(self, method: str, plan, metrics: dict) -> None:
        if self.quiet:
            return
        sizes = metrics["group_sizes"]
        table = Table(title=f"{method} on {plan.config.dataset} ({plan.recipe_name} recipe, seed {plan.config.seed})")
        table.add_column("stage", no_wrap=True)  # names stay whole; numbers wrap first on narrow terminals
        for column in ("all", f"many ({sizes['many']})", f"medium ({sizes['medium']})",
                       f"few ({sizes['few']})", "ECE", "NLL", "wrong conf."):
            table.add_column(column, justify="right")
        for record in metrics["stages"]:
            m = record.get("metrics") or {}
            name = record["name"] + (" (reused)" if record.get("reused") else "")
            table.add_row(name, fmt(m.get("acc")), fmt(m.get("many_acc")), fmt(m.get("medium_acc")),
                          fmt(m.get("few_acc")), fmt(m.get("ece")), fmt(m.get("nll"), 3),
                          fmt(m.get("wrong_confidence"), 3))
        Console().print(table)
