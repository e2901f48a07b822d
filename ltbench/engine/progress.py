"""What a run shows a person: log lines, a rich progress bar per stage, the final results table."""
from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..terminal import print_whole


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _StageBar:
    """Counts a stage's steps. The rate and the ETA are averages over the stage since its first step of this
    session finished (that step pays loader start-up and warm-up), so they do not jump with each batch;
    without a terminal (piped to a file) it prints one plain full line per epoch instead of a bar."""

    def __init__(self, reporter: "Reporter", progress: Progress | None, task, label: str, epochs: int,
                 total_steps: int, done_steps: int):
        self.reporter, self.progress, self.task, self.label = reporter, progress, task, label
        self.epochs, self.total, self.done = epochs, total_steps, done_steps
        self.started = time.perf_counter()
        self.first = None  # (time, steps done) when the first step of this session finished
        self.images = 0  # images since then
        self.fields = {"epoch": "-", "loss": "-", "acc": "-"}

    def rate(self) -> float | None:
        elapsed = time.perf_counter() - self.first[0] if self.first else 0.0
        return self.images / elapsed if self.images and elapsed > 0 else None

    def eta(self) -> float | None:
        if not self.first or self.done <= self.first[1]:
            return None
        per_step = (time.perf_counter() - self.first[0]) / (self.done - self.first[1])
        return per_step * (self.total - self.done)

    def _show(self) -> None:
        if self.progress is not None:
            rate = self.rate()
            self.progress.update(self.task, completed=self.done, info=(
                f"epoch {self.fields['epoch']} loss {self.fields['loss']} acc {self.fields['acc']}% "
                f"{'-' if rate is None else f'{rate:.0f}'} img/s eta {clock(self.eta())}"))

    def step(self, step: int, images: int) -> None:
        self.done += 1
        if self.first is None:
            self.first = (time.perf_counter(), self.done)
        else:
            self.images += images
        self._show()

    def epoch_done(self, epoch: int, stats: dict) -> None:
        self.fields = {"epoch": f"{epoch + 1}/{self.epochs}", "loss": f"{stats['loss']:.3f}",
                       "acc": f"{stats['train_acc']:.1f}"}
        if self.progress is None:
            rate = self.rate()
            self.reporter.log(f"{self.label} epoch {epoch + 1}/{self.epochs}: loss {stats['loss']:.4f}, train acc "
                              f"{stats['train_acc']:.2f}%, {stats['images_per_s']:.0f} img/s this epoch"
                              + (f", {rate:.0f} img/s in the stage" if rate else "")
                              + (f", test acc {stats['test_acc']:.2f}% (--log-test-acc)" if "test_acc" in stats else "")
                              + f", elapsed {clock(time.perf_counter() - self.started)}, eta {clock(self.eta())}")
        self._show()

    def finished(self) -> str:
        rate = self.rate()
        return (f"{self.label}: {self.epochs} epoch(s) done in {clock(time.perf_counter() - self.started)}"
                + (f", {rate:.0f} img/s on average" if rate else ""))


class Reporter:
    """Prints to a rich console (stderr for progress, so piped stdout stays clean)."""

    def __init__(self, console: Console | None = None, quiet: bool = False, silent: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet or silent
        self.silent = silent  # not even warnings (DDP ranks other than 0)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """Shown even with --quiet (one line): something was repaired or skipped."""
        if not self.silent:
            self.console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def stage(self, index: int, total: int, stage, key: str, steps_per_epoch: int, done_epochs: int = 0,
              done_steps: int = 0):
        """A progress bar on a terminal; plain per-epoch lines otherwise; nothing with --quiet."""
        label = f"stage {index + 1}/{total} {stage.name}"
        total_steps, done = stage.epochs * steps_per_epoch, done_epochs * steps_per_epoch + done_steps
        live = not self.quiet and self.console.is_terminal
        if not live:
            bar = _StageBar(self, None, None, label, stage.epochs, total_steps, done)
            yield bar
            self.log(bar.finished())
            return
        progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeElapsedColumn(), console=self.console, transient=False)
        with progress:
            task = progress.add_task("train", total=total_steps, completed=done,
                                     info=f"epoch {done_epochs}/{stage.epochs}: starting (first batch: data "
                                          "loaders, warm-up)")
            bar = _StageBar(self, progress, task, label, stage.epochs, total_steps, done)
            yield bar
        self.log(bar.finished())

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
        print_whole(table)  # at its full width, on a terminal or in a log
