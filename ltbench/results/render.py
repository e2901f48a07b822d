"""Rendering a Table: rich (terminal, or its plain-text drawing for files), markdown, LaTeX, csv; and
writing it atomically."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..files import make_folder, write_text
from .cells import Cell, Difference, Table

FORMATS = ("rich", "markdown", "latex", "csv")
SUFFIX_FORMATS = {".md": "markdown", ".tex": "latex", ".csv": "csv"}


def _latex_escape(text: str) -> str:
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                "Δ": r"$\Delta$"}
    return "".join(specials.get(ch, ch) for ch in text)


def _markdown(table: Table) -> str:
    def entry(value) -> str:
        if isinstance(value, Cell):
            text = value.text(table.show_seeds)
            return f"**{text}**" if value.best else text
        return str(value).replace("|", r"\|")

    align = ["--:" if isinstance(v, Cell) else ":--" for v in table.rows[0]]
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(entry(v) for v in row) + " |" for row in table.rows]
    lines += ["", table.note] if table.note else []
    return "\n".join(lines) + "\n"


def _latex(table: Table) -> str:
    def entry(value) -> str:
        if isinstance(value, Cell):
            text = _latex_escape(value.text(table.show_seeds))
            return rf"\textbf{{{text}}}" if value.best else text
        return _latex_escape(str(value))

    spec = "".join("r" if isinstance(v, Cell) else "l" for v in table.rows[0])
    caption = _latex_escape(" ".join(filter(None, [table.title, table.note])))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        if table.references and i == len(table.rows) - table.references:
            lines.append(r"\midrule")
        lines.append(" & ".join(entry(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _csv(table: Table) -> str:
    """The numbers, not their formatting: a mean and a std column (and n, where seeds differ) per value; a
    difference, its interval, whether that excludes 0, the seeds paired and why there is none."""
    records = []
    for row in table.rows:
        record = {}
        for column, value in zip(table.columns, row):
            if isinstance(value, Difference):
                record.update({column: value.mean, f"{column} low": value.low, f"{column} high": value.high,
                               f"{column} excludes 0": value.excludes_zero if value.mean is not None else None,
                               f"{column} seeds": value.seeds,
                               f"{column} note": value.why.removeprefix("- ").strip("()")})
            elif isinstance(value, Cell):
                record[column], record[f"{column} std"] = value.mean, value.std
                if table.show_seeds:
                    record[f"{column} seeds"] = value.seeds
            else:
                record[column] = value
        records.append(record)
    frame = pd.DataFrame(records)
    counts = [c for c in frame.columns if c.endswith(" seeds")]
    return frame.astype({c: "Int64" for c in counts}).to_csv(index=False)  # 2, not 2.0, beside empty cells


def to_rich(table: Table):
    """A rich Table (bold best values); labels are Text, so ``dasl[beta=0.3]`` is never read as markup."""
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(title=Text(table.title), caption=Text(table.note) if table.note else None)
    for column, value in zip(table.columns, table.rows[0]):
        numbers = isinstance(value, Cell)
        rich_table.add_column(Text(column), justify="right" if numbers else "left", no_wrap=numbers)
    first_reference = len(table.rows) - table.references
    for i, row in enumerate(table.rows):
        cells = [Text(v.text(table.show_seeds), style="bold" if v.best else "") if isinstance(v, Cell) else Text(str(v))
                 for v in row]
        rich_table.add_row(*cells, end_section=table.references > 0 and i == first_reference - 1)
    return rich_table


def render(table: Table, fmt: str) -> str:
    """The table as text in ``fmt`` (rich gives the plain-text drawing, for files)."""
    if fmt == "rich":
        from rich.console import Console

        from ..terminal import print_whole

        buffer = io.StringIO()
        print_whole(to_rich(table), Console(file=buffer, color_system=None))
        return buffer.getvalue()
    return {"markdown": _markdown, "latex": _latex, "csv": _csv}[fmt](table)


def output_format(fmt: str | None, out: Path | None) -> str:
    """--format wins, else the file suffix (.md, .tex, .csv; anything else: rich's text drawing)."""
    fmt = fmt or (SUFFIX_FORMATS.get(out.suffix.lower(), "rich") if out else "rich")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown table format '{fmt}' (choose {', '.join(FORMATS)})")
    return fmt


def write_table(table: Table, out: Path, fmt: str) -> None:
    """Atomically; a folder that cannot be written is one line (WriteError), an older file stays as it was."""
    make_folder(Path(out).parent)
    write_text(Path(out), render(table, fmt))
