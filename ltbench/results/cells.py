"""The table model: a Table of str and Cell entries (a Difference is a --compare-to cell), laid out by
layout.py and written by render.py."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    seeds: int | None = None
    best: bool = False
    digits: int = 2

    def text(self, show_seeds: bool = False, pm: str = "±") -> str:
        if self.mean is None:
            return "-"
        text = f"{self.mean:.{self.digits}f}" + (f" {pm} {self.std:.{self.digits}f}" if self.std is not None else "")
        return text + (f" [{self.seeds}]" if show_seeds and self.seeds else "")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]  # str or Cell entries
    references: int = 0  # the last `references` rows are published numbers
    show_seeds: bool = False  # seed counts differ between cells: print them in brackets
    note: str = ""  # printed under the table (a caption in LaTeX)


@dataclass
class Difference(Cell):
    """A ``--compare-to`` cell: the row minus the reference method, with its 95 % interval (``mean`` None:
    no interval, ``why`` says why)."""

    low: float | None = None
    high: float | None = None
    of_seeds: int | None = None  # the row's seeds, when fewer were paired
    why: str = ""

    @property
    def excludes_zero(self) -> bool:
        return self.mean is not None and (self.low > 0 or self.high < 0)

    def text(self, show_seeds: bool = False, pm: str = "±") -> str:
        if self.mean is None:
            return self.why or "-"
        text = f"{self.mean:+.{self.digits}f} [{self.low:+.{self.digits}f}, {self.high:+.{self.digits}f}]"
        text += " *" if self.excludes_zero else ""
        return text + (f" ({self.seeds} of {self.of_seeds} seeds)" if self.of_seeds else "")


def as_error(cell: Difference) -> Difference:
    """The same difference in top-1 error (the sign flips)."""
    if cell.mean is None:
        return cell
    return Difference(-cell.mean, seeds=cell.seeds, low=-cell.high, high=-cell.low, of_seeds=cell.of_seeds)
