"""How plots tell methods apart: a look per method, titles that fit."""
from __future__ import annotations

import textwrap

# every method its own look: a colour and a marker that change together (10 colours, 7 markers: 70 pairs
# before one repeats), then the line style; the same label has the same look in every panel of a figure
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
MAX_LINES = 8  # more methods than this: per-class accuracy is a heatmap, not lines a reader cannot tell apart


def method_styles(labels) -> dict[str, dict]:
    """label -> matplotlib line style keywords (color, marker, linestyle): no two alike up to 280 labels."""
    styles = {}
    for i, label in enumerate(dict.fromkeys(labels)):
        styles[label] = {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[i % len(MARKERS)],
                         "linestyle": LINESTYLES[i // (len(COLOURS) * len(MARKERS)) % len(LINESTYLES)]}
    return styles


def wrap_title(title: str, width: int) -> str:
    """A title in lines of at most ``width`` characters, broken between its " · " parts where it can."""
    lines = [""]
    for part in title.split(" · "):
        joined = f"{lines[-1]} · {part}" if lines[-1] else part
        lines[-1:] = [joined] if len(joined) <= width or not lines[-1] else [lines[-1], part]
    return "\n".join(textwrap.fill(line, width) for line in lines)
