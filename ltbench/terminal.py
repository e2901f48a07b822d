"""Tables as commands print them: whole, whatever the width of the terminal, the pipe or $COLUMNS.

rich fits a table to the console's width and, when it is too narrow, cuts cells with an ellipsis
(``82.…``) or splits names over lines (``label-smoothin`` / ``g``); a log written through a pipe has 80
columns. Here a table is printed at its natural width instead: no digit or name is ever cut or wrapped,
and on a terminal narrower than the table the terminal folds the long lines. Only prose columns (a
method's summary, an option's meaning) are fitted to a terminal, by :func:`fit_prose`.
"""
from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement

UNLIMITED = 100_000  # columns: wider than any table


def natural_width(renderable, console: Console) -> int:
    """The width ``renderable`` takes when nothing limits it."""
    return Measurement.get(console, console.options.update_width(UNLIMITED), renderable).maximum


def print_whole(renderable, console: Console | None = None) -> None:
    """Print ``renderable`` on ``console`` (stdout by default) at no less than its natural width."""
    console = console or Console()
    width = natural_width(renderable, console)
    if width <= console.width:
        console.print(renderable)
        return
    wide = Console(file=console.file, width=width, force_terminal=console.is_terminal,
                   color_system=console.color_system, no_color=console.no_color, highlight=False,
                   legacy_windows=console.legacy_windows)
    wide.print(renderable)


def fit_prose(table, console: Console, columns: list[int], least: int = 24, one_line: bool = False) -> None:
    """On a terminal, give the prose ``columns`` of ``table`` the room the other columns leave (at least
    ``least`` each), wrapped there, or with ``one_line`` each line cut with an ellipsis; the other columns
    keep their natural width. Not on a terminal (a pipe, a file), nothing changes: the prose is printed whole."""
    if not console.is_terminal:
        return
    for index in columns:
        table.columns[index].width = least
    spare = max(0, console.width - natural_width(table, console)) // len(columns)
    for index in columns:
        column = table.columns[index]
        column.width = least + spare
        column.no_wrap, column.overflow = (True, "ellipsis") if one_line else (False, "fold")
