"""Plots from run folders: ablation, per-class, reliability, imbalance.

Every function takes the runs frame of :func:`ltbench.results.runs.load_runs` and returns a matplotlib
``Figure`` built without pyplot (no global backend or figure state; saving renders with Agg), so tests can
read back the plotted numbers from its artists. Values are means over seeds with sample-std error bars
(0 for a single seed), the same numbers `ltbench table` prints.

Ablation, per-class and reliability compare methods within one dataset × IF, backbone and recipe. Given
runs of several (a quick-start run next to a smoke sweep), they draw one panel per setting, stacked in one
file, each titled with its setting, rather than mixing them or refusing; --filter picks one.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure, SubFigure

from ..errors import ConfigError, DataError
from ..files import atomic_write, make_folder
from ..record import PER_CLASS_FILE, TEST_LOGITS_FILE
from .runs import DATASET_NAMES, METRICS, compact_options, load_finished_runs, method_defaults
from .styles import MAX_LINES, method_styles, wrap_title
from .significance import read_test_logits

KINDS = ("ablation", "per-class", "reliability", "imbalance")
AXIS_LABELS = {"acc": "top-1 accuracy (%)", "many_acc": "many-shot accuracy (%)",
               "medium_acc": "medium-shot accuracy (%)", "few_acc": "few-shot accuracy (%)",
               "balanced_acc": "balanced accuracy (%)", "ece": "ECE (%)", "nll": "NLL",
               "wrong_confidence": "confidence of wrong predictions", "feature_compactness": "feature compactness"}
ABLATED_METHOD = "dasl"


def _seeds(df: pd.DataFrame, by: tuple[str, ...] = ("label",)) -> str:
    """Seeds per plotted value: '3 seeds', or '1-3 seeds' where they differ."""
    counts = df.groupby(list(by)).size()
    low, high = int(counts.min()), int(counts.max())
    return _n_seeds(low) if low == high else f"{low}-{high} seeds"


def _n_seeds(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


Canvas = Figure | SubFigure  # what a panel is drawn on: the figure, or its part for one setting


def settings(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs split by dataset × IF, backbone and recipe, each with the line that names it; datasets in
    name order, largest imbalance first, as the tables print them."""
    ordered = df.assign(_imbalance=-df["imbalance"].astype(float).fillna(0)).sort_values(
        ["dataset", "_imbalance", "profile", "backbone", "recipe"], kind="stable").drop(columns="_imbalance")
    return [(f"{setting} · {backbone} · recipe {recipe} · {_seeds(runs)}", runs)
            for (setting, backbone, recipe), runs in ordered.groupby(["setting", "backbone", "recipe"], sort=False)]


def _per_setting(parts: list[tuple[str, pd.DataFrame]], size: Callable[[pd.DataFrame], tuple[float, float]],
                 draw: Callable[[Canvas, pd.DataFrame, str], None]) -> Figure:
    """One panel per setting, stacked; a single setting is the whole figure."""
    sizes = [size(runs) for _, runs in parts]
    fig = Figure(figsize=(max(w for w, _ in sizes), sum(h for _, h in sizes)), layout="constrained")
    panels = [fig] if len(parts) == 1 else fig.subfigures(len(parts), 1, height_ratios=[h for _, h in sizes])
    for panel, (context, runs) in zip(panels, parts):
        draw(panel, runs, context)
    return fig


def _mean_std(values: pd.Series) -> tuple[float, float]:
    std = values.std()  # ddof=1; NaN for one seed, drawn as no error bar
    return float(values.mean()), 0.0 if pd.isna(std) else float(std)


def ablation(df: pd.DataFrame, metric: str = "acc", warn: Callable[[str], None] = warnings.warn) -> Figure:
    """DaSL variants as bars grouped by the switch that differs from DaSL's defaults, baselines apart; one
    panel per setting that has DaSL runs (the others are named in a warning)."""
    parts = [(context, runs) for context, runs in settings(df) if (runs["method"] == ABLATED_METHOD).any()]
    if not parts:
        raise ConfigError(f"the ablation plot needs {ABLATED_METHOD} runs; found {', '.join(df['method'].unique())} "
                          f"(run benchmarks/dasl-ablation.toml)")
    for context, runs in settings(df):
        if not (runs["method"] == ABLATED_METHOD).any():
            warn(f"ablation plot: left out {context.rsplit(' · ', 1)[0]} (no {ABLATED_METHOD} runs)")
    width = lambda runs: (max(6.0, 0.8 * len(runs["label"].unique()) + 2), 4.5)  # noqa: E731
    return _per_setting(parts, width, lambda panel, runs, context: _ablation(panel, runs, context, metric))


def _ablation(fig: Canvas, df: pd.DataFrame, context: str, metric: str) -> None:
    variants = df[df["method"] == ABLATED_METHOD]
    defaults = method_defaults(variants)[ABLATED_METHOD]
    # an option all dasl runs share (a suite's [options.dasl]) is the ablation's baseline, not a switch
    first = variants["options"].iloc[0]
    shared = {k: v for k, v in first.items() if all(o.get(k) == v for o in variants["options"])}
    common = {k: v for k, v in shared.items() if defaults.get(k) != v}
    baseline = {**defaults, **shared}
    groups: dict[str, list[tuple[str, pd.Series]]] = {}
    for label, runs in df.groupby("label", sort=False):
        if runs["method"].iloc[0] != ABLATED_METHOD:
            groups.setdefault("baselines", []).append((runs["base"].iloc[0], runs[metric]))
            continue
        changed = {k: v for k, v in sorted(runs["options"].iloc[0].items()) if baseline.get(k) != v}
        name = "+".join(changed) or "defaults"
        tick = compact_options(changed) or ABLATED_METHOD
        groups.setdefault(name, []).append((tick, runs[metric]))
    order = ["defaults"] * ("defaults" in groups) + sorted(set(groups) - {"defaults", "baselines"}) \
        + ["baselines"] * ("baselines" in groups)
    ax = fig.add_subplot()
    x, ticks, labels, extent = 0.0, [], [], []
    for name in order:
        bars = groups[name]
        positions = x + np.arange(len(bars))
        stats = [_mean_std(values) for _, values in bars]
        extent += [m - s for m, s in stats] + [m + s for m, s in stats]
        ax.bar(positions, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, label=name)
        ticks += list(positions)
        labels += [tick for tick, _ in bars]
        x += len(bars) + 1  # a gap between groups
    if "defaults" in groups:
        ax.axhline(_mean_std(groups["defaults"][0][1])[0], color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(ticks, labels, rotation=30, ha="right")
    ax.set_ylabel(AXIS_LABELS[metric])
    low, high = min(extent), max(extent)
    if low > 0 and high - low < high / 3:  # e.g. MNIST: 96.5-98.3 %; from 0 the differences would not show
        margin = max(high - low, 0.1) * 0.25
        ax.set_ylim(low - margin, high + margin)
        ax.set_ylabel(f"{AXIS_LABELS[metric]}, axis cut at {low - margin:.1f}")
    ax.set_title(f"DaSL ablation: {context}" + (f"\nevery dasl run: {compact_options(common)}" if common else ""))
    ax.legend(title="switch changed", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a bar


def _read_per_class(run: pd.Series) -> pd.DataFrame:
    path = Path(run["path"]) / PER_CLASS_FILE
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:  # ValueError: pandas' parser and empty-data errors, bad UTF-8
        raise DataError(f"{path}: cannot read per-class results ({' '.join(str(exc).split())}); the run folder is "
                        f"damaged: leave it out with --filter, or run it again") from None
    missing = [c for c in ("class", "train_count", "acc") if c not in table.columns]
    numeric = all(pd.api.types.is_numeric_dtype(table[c]) for c in ("train_count", "acc") if c in table.columns)
    if missing or not numeric:
        raise DataError(f"{path}: not a per-class results file (columns class, train_count, acc of numbers "
                        f"expected); leave the run out with --filter, or run it again")
    return table


def per_class(df: pd.DataFrame) -> Figure:
    """Per-class test accuracy over the train counts, one panel per setting: up to MAX_LINES methods as lines
    (each its colour and marker) over log-scale bars of the train counts; more as a heatmap of methods x
    classes, the classes ordered by train images (head first), that a reader can scan row by row."""
    styles = method_styles(df["label"])

    def size(runs: pd.DataFrame) -> tuple[float, float]:
        labels = list(runs["label"].unique())
        if len(labels) > MAX_LINES:
            return 10.0, 3.2 + 0.3 * len(labels)
        return 9.0, 4.5 + 0.2 * math.ceil(len(labels) / _legend_columns(labels))

    def draw(panel: Canvas, runs: pd.DataFrame, context: str) -> None:
        many = runs["label"].nunique() > MAX_LINES
        (_per_class_heatmap if many else _per_class)(panel, runs, context, styles)

    return _per_setting(settings(df), size, draw)


def _legend_columns(labels: list[str]) -> int:
    """As many legend columns (up to 3) as labels this long fit across a 9-inch figure in small type."""
    longest = max(len(label) for label in labels) + len(" (10 seeds)")
    return max(1, min(3, int(8.5 // (0.075 * longest + 0.6))))


def _mean_per_class(runs: pd.DataFrame) -> np.ndarray:
    return np.mean([_read_per_class(run)["acc"].to_numpy(float) for _, run in runs.iterrows()], axis=0)


def _per_class(fig: Canvas, df: pd.DataFrame, context: str, styles: dict[str, dict]) -> None:
    ax = fig.add_subplot()
    counts_ax = ax.twinx()
    first = _read_per_class(df.iloc[0])
    counts_ax.bar(first["class"], first["train_count"], color="0.85", label="train images")
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("train images per class (log scale)")
    ax.set_zorder(counts_ax.get_zorder() + 1)  # lines in front of the bars
    ax.patch.set_visible(False)
    for label, runs in df.groupby("label", sort=False):
        style = {**styles[label], "marker": styles[label]["marker"] if len(first) <= 100 else None}
        ax.plot(first["class"], _mean_per_class(runs), markersize=4, label=f"{label} ({_n_seeds(len(runs))})",
                **style)
    ax.set_xlabel("class index (head first)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-class accuracy: {context}")
    # below the plot, not in it: the tail classes (right) are what the plot is for
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=_legend_columns(names), fontsize="small")


def _per_class_heatmap(fig: Canvas, df: pd.DataFrame, context: str, styles: dict[str, dict]) -> None:
    """Methods (rows, in table order) x classes (columns, most train images first); the value in each cell
    where there is room (up to 30 classes); the train counts as bars above, aligned with the columns."""
    first = _read_per_class(df.iloc[0])
    order = np.argsort(-first["train_count"].to_numpy(), kind="stable")  # head first; ties by class index
    groups = df.groupby("label", sort=False)
    uniform = groups.size().nunique() == 1  # the seeds are in the title then, as the recipe and backbone are
    labels = [runs["base"].iloc[0] + ("" if uniform else f" ({_n_seeds(len(runs))})") for _, runs in groups]
    values = np.array([_mean_per_class(runs)[order] for _, runs in groups])
    counts_ax, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.2, 0.3 * len(labels)]})
    positions = np.arange(len(order))
    counts_ax.bar(positions, first["train_count"].to_numpy()[order], color="0.6", width=0.9)
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("train images\n(log scale)", fontsize="small")
    counts_ax.tick_params(labelbottom=False)
    if "group" in first.columns:  # many / medium / few: a line between groups, the name over each
        group = first["group"].to_numpy()[order]
        edges = [0] + [i for i in range(1, len(group)) if group[i] != group[i - 1]] + [len(group)]
        for start, end in zip(edges, edges[1:]):
            counts_ax.annotate(str(group[start]), ((start + end - 1) / 2, 1.02), xycoords=("data", "axes fraction"),
                               ha="center", va="bottom", fontsize="small")
            if start:
                for axis in (counts_ax, ax):
                    axis.axvline(start - 0.5, color="white" if axis is ax else "0.3", linewidth=1.5)
    low = 10 * math.floor(min(float(np.nanmin(values)), 99.0) / 10)  # 89-100 %: a scale from 80, not 0
    image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=low, vmax=100, interpolation="nearest")
    ax.set_yticks(np.arange(len(labels)), labels, fontsize="small")
    if len(order) <= 30:
        ax.set_xticks(positions, [str(c) for c in first["class"].to_numpy()[order]])
        for (row, column), value in np.ndenumerate(values):
            ax.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
                    color="black" if value > low + 0.6 * (100 - low) else "white")
    ax.set_xlabel("class (most train images first)")
    fig.colorbar(image, ax=[counts_ax, ax], label="test accuracy (%)", fraction=0.04, pad=0.02)
    fig.suptitle(wrap_title(f"Per-class accuracy: {context}", 90))  # over the figure, not one axis: never cut


def _confidences(run: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = read_test_logits(run["path"])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return probs.max(1), probs.argmax(1) == labels


def reliability(df: pd.DataFrame, warn: Callable[[str], None] = warnings.warn) -> Figure:
    """One reliability diagram per method: accuracy per confidence bin (15 bins, seeds pooled), over a
    histogram of the images in each bin (a bin of a few images is noise, however far off it looks); one
    panel per setting. Runs without test_logits.npz (made before runs kept them) are left out with a warning."""
    kept = df[[(Path(path) / TEST_LOGITS_FILE).is_file() for path in df["path"]]]
    left_out = df[~df["run"].isin(kept["run"])]
    if not left_out.empty:
        warn(f"reliability plot: left out {len(left_out)} run(s) without test_logits.npz "
             f"({', '.join(left_out['label'].unique())})")
    if kept.empty:
        raise ConfigError("the reliability plot needs test_logits.npz in the run folders, and none of these runs has "
                          "it; run them again with the current ltbench")
    df = kept

    def size(runs: pd.DataFrame) -> tuple[float, float]:
        labels = runs["label"].nunique()
        return max(3.6 * min(labels, 4), 7.2), 4.4 * math.ceil(labels / 4) + 1.0  # + the title and the legend

    return _per_setting(settings(df), size, _reliability)


def _reliability(fig: Canvas, df: pd.DataFrame, context: str) -> None:
    from ..calibration import ECE_BINS, reliability_bins

    labels = list(df["label"].unique())
    columns = min(len(labels), 4)
    rows = math.ceil(len(labels) / columns)
    # each method: the diagram and, below it, its bin counts (rows alternate 3:1)
    grid = fig.subplots(2 * rows, columns, squeeze=False, gridspec_kw={"height_ratios": [3, 1] * rows})
    diagrams = [grid[2 * (i // columns), i % columns] for i in range(rows * columns)]
    histograms = [grid[2 * (i // columns) + 1, i % columns] for i in range(rows * columns)]
    for ax, counts_ax, label in zip(diagrams, histograms, labels):
        runs = df[df["label"] == label]
        pooled = [_confidences(run) for _, run in runs.iterrows()]
        bins = reliability_bins(np.concatenate([c for c, _ in pooled]), np.concatenate([k for _, k in pooled]),
                                ECE_BINS)
        edges, width = bins["edges"][:-1], 1.0 / ECE_BINS
        ax.bar(edges, bins["accuracy"], width=width, align="edge", edgecolor="black", label="accuracy")
        filled = bins["count"] > 0
        gap = np.where(filled, bins["confidence"] - bins["accuracy"], 0.0)
        # over-confident bins (confidence above accuracy): red up to the confidence; under-confident ones
        # (accuracy above confidence): the part of the accuracy bar above the confidence, hatched green
        ax.bar(edges, np.maximum(gap, 0.0), bottom=bins["accuracy"], width=width, align="edge", color="tab:red",
               alpha=0.3, label="over-confident: gap up to the confidence")
        under = np.maximum(-gap, 0.0)
        ax.bar(edges, under, bottom=np.where(filled, bins["confidence"], 0.0), width=width, align="edge",
               color="tab:green", alpha=0.6, hatch="//", edgecolor="black", linewidth=np.where(under > 0, 1.0, 0.0),
               label="under-confident: accuracy above the confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece, ece_std = _mean_std(runs["ece"])
        ax.set_title(f"{label}\nECE {ece:.2f}%" + (f" ± {ece_std:.2f}" if len(runs) > 1 else ""), fontsize="medium")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.tick_params(labelbottom=False)  # the histogram below carries the confidence axis
        counts_ax.bar(edges, bins["count"], width=width, align="edge", color="0.6", edgecolor="black",
                      label="images per bin")
        counts_ax.set_yscale("log")  # 1 image and 9,000 in one axis
        counts_ax.set_ylim(0.5, max(2.0, bins["count"].max() * 2))
        counts_ax.set_xlim(0, 1)
        counts_ax.set_ylabel("images", fontsize="small")
        counts_ax.set_xlabel("confidence")
    # below the diagrams, over none of them: what the bars and the two kinds of gap are
    fig.legend(*diagrams[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    for ax in diagrams[len(labels):] + histograms[len(labels):]:
        ax.set_visible(False)
    fig.suptitle(f"Reliability ({ECE_BINS} bins, test set; images per bin below each)\n{context}")


def imbalance(df: pd.DataFrame, metric: str = "acc", warn: Callable[[str], None] = warnings.warn) -> Figure:
    """Accuracy vs imbalance factor, one line per method, one panel per dataset. A dataset run at one
    factor only is a column of dots, not a trend: its panel and a warning say so."""
    df = df[df["imbalance"].notna()].astype({"imbalance": float})
    if df.empty:
        raise ConfigError("the imbalance plot needs runs with an imbalance factor (published LT splits have none)")
    datasets = sorted(df["dataset"].unique())
    styles = method_styles(df["label"])
    legend_rows = math.ceil(len(styles) / _legend_columns(list(styles)))
    fig = Figure(figsize=(max(9.0, 5.5 * len(datasets)), 4.8 + 0.2 * legend_rows), layout="constrained")
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets):
        runs = df[df["dataset"] == dataset]
        for label, group in runs.groupby("label", sort=False):
            stats = group.groupby("imbalance")[metric].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index.to_numpy(float), stats["mean"].to_numpy(float),
                        yerr=stats["std"].fillna(0.0).to_numpy(float), capsize=3, markersize=5, label=label,
                        **styles[label])
        factors = sorted(runs["imbalance"].unique())
        ax.set_xscale("log")
        ax.set_xticks(factors, [f"{f:g}" for f in factors])
        ax.minorticks_off()
        ax.set_xlabel("imbalance factor (max / min class count)")
        ax.set_ylabel(AXIS_LABELS[metric])
        recipes, seeds = ", ".join(runs["recipe"].unique()), _seeds(runs, ("label", "imbalance"))
        title = f"{DATASET_NAMES.get(dataset, dataset)} · recipe {recipes} · {seeds}"
        if len(factors) == 1:
            only = f"only IF {factors[0]:g} here: run other imbalance factors (--imbalance) to see a trend"
            warn(f"imbalance plot, {DATASET_NAMES.get(dataset, dataset)}: {only}")
            title += "\n" + textwrap.fill(only, 60)  # a line no wider than the panel: never clipped
        ax.set_title(title, fontsize="medium")
    # one legend for every panel, below them (not over the lines): a label has the same look in each
    handles = {}
    for ax in fig.axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize="small",
               ncols=_legend_columns(list(handles)))
    return fig


def make_plot(kind: str, results: str | Path, filters: list[str] | None = None, metric: str = "acc",
              warn: Callable[[str], None] = warnings.warn) -> Figure:
    """Read the runs of a results folder and draw ``kind``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown plot '{kind}' (choose {', '.join(KINDS)})")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}' (choose {', '.join(METRICS)})")
    df = load_finished_runs(results, filters, warn)
    if kind == "ablation":
        return ablation(df, metric, warn)
    if kind == "imbalance":
        return imbalance(df, metric, warn)
    return per_class(df) if kind == "per-class" else reliability(df, warn)


def save_figure(fig: Figure, out: str | Path) -> Path:
    """Write a .png or .pdf atomically (a half-written plot never replaces a good one)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf"):
        raise ConfigError(f"plot file '{out}' must end in .png or .pdf")
    make_folder(out.parent)
    atomic_write(out, lambda f: fig.savefig(f, format=out.suffix.lower()[1:], dpi=150))
    return out
