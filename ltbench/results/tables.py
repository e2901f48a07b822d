"""Tables from run folders: scan ``<results>/runs/*/`` into pandas, aggregate over seeds, render.

Runs are grouped by everything that defines them except the seed: method and method options, dataset,
imbalance factor and long-tail profile, backbone and recipe. A recipe whose schedule was overridden
(``--epochs 1``) is shown as ``smoke[epochs=1]``, so shortened runs never average with full ones. A group
shows mean ± sample std (ddof=1; blank for one seed) over its seeds and how many there were. Device and
precision are not part of a group: bf16 and fp32 runs of one setting are seeds of one experiment.

Options are labelled against the method's declared ``defaults`` (``dasl[beta=0.3]``), so a label means
the same whatever subset of runs a table shows; a method that cannot be imported here (a plugin not on
the path, a file being edited) falls back to the most common value of each option among its runs.

Rows of a recipe other than the papers' (``paper``, ``imagenet``) carry it in their label (``ce (cpu)``):
cpu numbers must never pass for paper numbers. Best values are marked among our runs only (published
rows are context, not contestants).
"""
from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import ConfigError, NotFoundError
from .reference import REFERENCES, Reference
from .significance import REPLICATES, paired_bootstrap, paired_differences
from .store import make_folder, read_json, write_text

METRICS = ("acc", "many_acc", "medium_acc", "few_acc", "balanced_acc", "ece", "nll", "wrong_confidence",
           "feature_compactness")
GROUPS = ("many", "medium", "few")
ACCURACIES = ("acc", *(f"{group}_acc" for group in GROUPS))
PUBLISHED_RECIPES = ("paper", "imagenet")
SCHEDULE_OVERRIDES = ("epochs", "stage2_epochs", "batch_size", "lr", "stage2_lr")
METHOD_ORDER = ("ce", "label-smoothing", "crt", "lws", "tau-norm", "ncm", "dasl")  # baselines first, as papers do
DATASET_NAMES = {"cifar10-lt": "CIFAR-10-LT", "cifar100-lt": "CIFAR-100-LT", "imagenet-lt": "ImageNet-LT",
                 "places-lt": "Places-LT", "inat18": "iNat18", "digits-lt": "digits-LT", "mnist-lt": "MNIST-LT",
                 "fashion-mnist-lt": "Fashion-MNIST-LT"}
SETTING = ["dataset", "imbalance", "profile"]
GROUP_KEYS = ["label", "base", "method", "setting", *SETTING, "backbone", "recipe", "recipe_name"]
LAYOUTS = ("paper", "long")
TABLE_METRICS = ("acc", "error")
FORMATS = ("rich", "markdown", "latex", "csv")
SUFFIX_FORMATS = {".md": "markdown", ".tex": "latex", ".csv": "csv"}
# metrics the long layout can add after ECE (--extra): column name, decimals, lower is better
EXTRA_COLUMNS = {"balanced_acc": ("balanced", 2, False), "nll": ("NLL", 3, True),
                 "wrong_confidence": ("wrong conf.", 3, True), "feature_compactness": ("compactness", 3, True)}
_MISSING = object()


# reading runs ----------------------------------------------------------------------------------------
def parse_filters(pairs: list[str] | None) -> dict[str, list[str]]:
    """``KEY=VALUE`` on config.json keys (dotted for nested ones: ``method_options.beta``); a key given
    twice matches either value."""
    filters: dict[str, list[str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"filter '{pair}' must look like KEY=VALUE (e.g. --filter method=crt)")
        filters.setdefault(key.strip(), []).append(value.strip())
    return filters


def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _matches(value, wanted: str) -> bool:
    if value is _MISSING:
        return False
    if isinstance(value, bool):
        return wanted.lower() in (("true", "on", "yes", "1") if value else ("false", "off", "no", "0"))
    if isinstance(value, (int, float)):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def compact_options(options: dict) -> str:
    return ",".join(f"{k}={format_value(v)}" for k, v in sorted(options.items()))


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
              int: "a number", float: "a number"}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unusable(folder: Path, config, metrics) -> str | None:
    """Why a finished run's files cannot make a table row (a hand-edited or foreign file), or None."""
    for name, content in (("config.json", config), ("metrics.json", metrics)):
        if not isinstance(content, dict):
            return f"{folder / name} holds {JSON_TYPES.get(type(content), 'something else')}, not a JSON object"
    expected = {**{key: (str, "a string") for key in ("method", "dataset", "backbone", "recipe")},
                "seed": (int, "an integer")}
    for key, (kind, what) in expected.items():
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{folder / 'config.json'} has '{key}' = {value!r} ({what} expected)"
    if config.get("imbalance") is not None and not _number(config["imbalance"]):
        return f"{folder / 'config.json'} has 'imbalance' = {config['imbalance']!r} (a number or null expected)"
    if not isinstance(config.get("method_options") or {}, dict):
        return f"{folder / 'config.json'} has 'method_options' = {config['method_options']!r} (an object expected)"
    for key in METRICS:
        if metrics.get(key) is not None and not _number(metrics[key]):
            return f"{folder / 'metrics.json'} has '{key}' = {metrics[key]!r} (a number expected)"
    sizes = metrics.get("group_sizes")
    if not (isinstance(sizes, dict) and all(isinstance(sizes.get(g), int) for g in GROUPS)):
        return f"{folder / 'metrics.json'} has 'group_sizes' = {sizes!r} (many/medium/few class counts expected)"
    return None


def _row(folder: Path, config: dict, metrics: dict) -> dict:
    overrides = {k: config[k] for k in SCHEDULE_OVERRIDES if config.get(k) is not None}
    row = {"run": folder.name, "path": str(folder), "method": config["method"],
           "options": config.get("method_options") or {}, "method_defaults": config.get("method_defaults"),
           "dataset": config["dataset"],
           "imbalance": config.get("imbalance"), "profile": config.get("profile", "exp"),
           "backbone": config["backbone"], "recipe_name": config["recipe"],
           "recipe": config["recipe"] + (f"[{compact_options(overrides)}]" if overrides else ""),
           "seed": config["seed"], "run_key": metrics.get("run_key")}
    row["setting"] = setting_name(row["dataset"], row["imbalance"], row["profile"])
    row.update({m: metrics.get(m) for m in METRICS})
    row.update({g: metrics["group_sizes"][g] for g in GROUPS})
    return row


def load_runs(results: str | Path, filters: dict[str, list[str]] | None = None,
              warn: Callable[[str], None] = warnings.warn) -> pd.DataFrame:
    """One row per finished run under ``<results>/runs/``, with ``label`` and ``base`` columns.

    A folder without metrics.json is unfinished (metrics.json is written last) and unreadable JSON is a
    half-copied folder: both are skipped with one ``warn`` line each, so a live sweep never breaks a table.
    """
    filters = filters or {}
    rows, seen_keys, read_any = [], set(), False
    for folder in sorted(p for p in (Path(results) / "runs").glob("*") if p.is_dir()):
        if not (folder / "metrics.json").is_file():
            warn(f"skipped {folder}: unfinished (no metrics.json)")
            continue
        try:
            config, metrics = read_json(folder / "config.json"), read_json(folder / "metrics.json")
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            warn(f"skipped {folder}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})")
            continue
        problem = _unusable(folder, config, metrics)
        if problem:
            warn(f"skipped {folder}: {problem}")
            continue
        row = _row(folder, config, metrics)
        read_any = True
        seen_keys.update(k for k in filters if _lookup(config, k) is not _MISSING)
        if all(any(_matches(_lookup(config, k), v) for v in values) for k, values in filters.items()):
            rows.append(row)
    unknown = sorted(set(filters) - seen_keys)
    if unknown and read_any:
        raise ConfigError(f"no run has the config key {', '.join(map(repr, unknown))}; filter on keys of "
                          f"config.json (method, dataset, imbalance, recipe, seed, method_options.NAME, ...)")
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df[list(METRICS)] = df[list(METRICS)].astype(float)  # None (an empty shot group) -> NaN
    return add_labels(df)


def _most_common(values: list):
    counts = Counter(json.dumps(v, sort_keys=True) for v in values)
    return json.loads(counts.most_common(1)[0][0])


def method_defaults(df: pd.DataFrame) -> dict[str, dict]:
    """Each method's default options as its runs recorded them (config.json ``method_defaults``), so tables
    never import torch and label old runs by the defaults of their own time; runs written before that
    record existed fall back to the installed class's ``defaults``, else the most common value per option."""
    defaults = {}
    recorded = df["method_defaults"] if "method_defaults" in df else pd.Series([None] * len(df), index=df.index)
    for method, group in df.groupby("method"):
        known = [d for d in recorded[group.index] if isinstance(d, dict)]
        if len(known) == len(group):
            defaults[method] = _most_common(known)
            continue
        from ..registry import METHODS, load_methods  # imports the method files, hence torch

        try:
            load_methods()
        except Exception:  # noqa: BLE001  a method file being written must not stop tables reading files
            pass
        if method in METHODS:
            defaults[method] = dict(METHODS.get(method).obj.defaults)
        else:
            options = group["options"]
            keys = {k for o in options for k in o}
            defaults[method] = {k: _most_common([o.get(k) for o in options]) for k in keys}
    return defaults


def option_label(method: str, options: dict, defaults: dict) -> str:
    """``dasl[beta=0.3]``: the method with the options that differ from its defaults."""
    changed = {k: v for k, v in options.items() if defaults.get(k, _MISSING) != v}
    return f"{method}[{compact_options(changed)}]" if changed else method


def add_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``base``: method[changed options]; ``label``: base plus the recipe where it is not a published one
    or several are shown, plus the backbone where several are shown. Rows come baselines first."""
    defaults = method_defaults(df)
    df = df.copy()
    df["base"] = [option_label(m, o, defaults[m]) for m, o in zip(df["method"], df["options"])]
    several_recipes, several_backbones = df["recipe"].nunique() > 1, df["backbone"].nunique() > 1

    def label(row) -> str:
        parts = [row.recipe] if several_recipes or row.recipe not in PUBLISHED_RECIPES else []
        parts += [row.backbone] if several_backbones else []
        return row.base + (f" ({', '.join(parts)})" if parts else "")

    df["label"] = [label(row) for row in df.itertuples()]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    df["_rank"] = df["method"].map(lambda m: rank.get(m, len(rank)))
    return df.sort_values(["_rank", "label", "seed"]).drop(columns="_rank").reset_index(drop=True)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per group: ``<metric>_mean``, ``<metric>_std`` (ddof=1, NaN for one seed), ``seeds``."""
    grouped = df.groupby(GROUP_KEYS, dropna=False, sort=False)
    stats = grouped[list(METRICS)].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["seeds"] = grouped.size()
    for group in GROUPS:
        stats[group] = grouped[group].first()
    return stats.reset_index()


def setting_name(dataset: str, imbalance, profile: str = "exp") -> str:
    """``CIFAR-10-LT IF100``: a column of the paper layout."""
    name = DATASET_NAMES.get(dataset, dataset)
    if imbalance is None or pd.isna(imbalance):
        return name
    return f"{name} IF{imbalance:g}" + (f" {profile}" if profile != "exp" else "")


def _order(summary: pd.DataFrame) -> pd.DataFrame:
    """Datasets in name order, largest imbalance first (as CIFAR-LT papers print), baselines before others."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    keyed = summary.assign(_imb=-summary["imbalance"].astype(float).fillna(0),
                           _method=summary["method"].map(lambda m: rank.get(m, len(rank))))
    return keyed.sort_values(["dataset", "_imb", "profile", "_method", "label"]).drop(columns=["_imb", "_method"])


# differences to a reference method ---------------------------------------------------------------
COMPARED = ["setting", "backbone", "recipe"]  # with the seed and the test images: what pairs two runs


def _one_per_seed(runs: pd.DataFrame, warn: Callable[[str], None]) -> pd.DataFrame:
    """Runs with test logits, one per seed (the last by folder name, i.e. the newest, where a seed ran twice)."""
    runs = runs[[(Path(p) / "test_logits.npz").is_file() for p in runs["path"]]].sort_values(["seed", "run"])
    repeated = runs[runs.duplicated("seed", keep="last")]
    for run in repeated.itertuples():
        warn(f"{run.label}, {run.setting}: seed {run.seed} ran more than once; --compare-to pairs the newest "
             f"run of it, not {run.run}")
    return runs.drop_duplicates("seed", keep="last").set_index("seed")


def compare_runs(df: pd.DataFrame, reference: str, replicates: int = REPLICATES,
                 warn: Callable[[str], None] = warnings.warn) -> dict[tuple[str, str], Difference]:
    """Per (label, setting): top-1 of the row minus ``reference``'s (a method label: ``crt``, ``dasl[beta=0.3]``)
    in the same setting, backbone and recipe, over the seeds both have (ltbench.results.significance)."""
    if reference not in set(df["base"]):
        raise ConfigError(f"--compare-to {reference}: no such method among the runs shown (they are "
                          f"{', '.join(dict.fromkeys(df['base']))}); name one, with its options if any")
    differences = {}
    for (label, *setting), runs in df.groupby(["label", *COMPARED], sort=False):
        key = (label, setting[0])
        if runs["base"].iloc[0] == reference:
            differences[key] = Difference(None, why="reference")
            continue
        same_setting = (df[COMPARED] == pd.Series(setting, index=COMPARED)).all(axis=1)
        ref_runs = df[same_setting & (df["base"] == reference)]
        if ref_runs.empty:
            differences[key] = Difference(None, why=f"- (no {reference} run here)")
            continue
        mine, theirs = _one_per_seed(runs, warn), _one_per_seed(ref_runs, warn)
        seeds = sorted(set(mine.index) & set(theirs.index))
        if not seeds:
            why = "no test logits" if mine.empty else f"no test logits of {reference}" if theirs.empty else \
                f"no seed in common with {reference}"
            differences[key] = Difference(None, why=f"- ({why})")
            continue
        interval = paired_bootstrap([paired_differences(mine.loc[s, "path"], theirs.loc[s, "path"]) for s in seeds],
                                    replicates)
        row_seeds = runs["seed"].nunique()
        differences[key] = Difference(interval.difference, seeds=len(seeds), low=interval.low, high=interval.high,
                                      of_seeds=row_seeds if len(seeds) < row_seeds else None)
    return differences


def _as_error(cell: Difference) -> Difference:
    """The same difference in top-1 error (the sign flips)."""
    if cell.mean is None:
        return cell
    return Difference(-cell.mean, seeds=cell.seeds, low=-cell.high, high=-cell.low, of_seeds=cell.of_seeds)


def comparison_note(reference: str, replicates: int, error: bool) -> str:
    what = "error" if error else "accuracy"
    return (f"Δ vs {reference}: top-1 {what} of the row minus {reference}'s (points), mean over the seeds both ran, "
            f"with a 95 % paired bootstrap interval over test images ({replicates} replicates, seeds combined; "
            f"test-set noise for these trained models, not training noise); * where it excludes 0.")


# table model -----------------------------------------------------------------------------------------
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


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _cell(row, metric: str, error: bool = False, digits: int = 2) -> Cell:
    mean, std = _num(row[f"{metric}_mean"]), _num(row[f"{metric}_std"])
    if error and mean is not None:
        mean = 100.0 - mean
    return Cell(mean, std, int(row["seeds"]), digits=digits)


def _mark_best(cells: list[Cell], lower_is_better: bool) -> None:
    """Bold the best of two or more values (as printed: ties at the printed decimals are all best)."""
    values = [round(c.mean, c.digits) for c in cells if c.mean is not None]
    if len(values) > 1:
        best = min(values) if lower_is_better else max(values)
        for cell in cells:
            cell.best = cell.mean is not None and round(cell.mean, cell.digits) == best


def _reference_matches(ref: Reference, row) -> bool:
    same_imbalance = (ref.imbalance is None and pd.isna(row["imbalance"])) or (
        ref.imbalance is not None and not pd.isna(row["imbalance"]) and float(row["imbalance"]) == ref.imbalance)
    return (ref.dataset == row["dataset"] and same_imbalance and ref.backbone == row["backbone"]
            and ref.recipe == row["recipe"] and row["profile"] == "exp")


def _ref_cell(value: float | None, error: bool = False) -> Cell:
    return Cell(None if value is None else (100.0 - value if error else value))


def _difference(differences: dict, label: str, setting: str, error: bool) -> Difference:
    cell = differences.get((label, setting), Difference(None))
    return _as_error(cell) if error else cell


def long_table(summary: pd.DataFrame, metric: str = "acc", with_reference: bool = False,
               extra: tuple[str, ...] = (), differences: dict | None = None, reference: str = "") -> Table:
    """One row per group: all / many / medium / few / ECE (/ the ``extra`` metrics) / seeds; best marked
    within each dataset × IF. With ``differences`` (compare_runs), a column of them follows "all"."""
    error = metric == "error"
    summary = _order(summary)
    sizes = summary[list(GROUPS)].drop_duplicates()
    uniform = len(sizes) == 1
    group_columns = [f"{g} ({int(sizes.iloc[0][g])})" if uniform else g for g in GROUPS]
    columns = ["method", "dataset", "backbone", "recipe", "all", *group_columns, "ECE",
               *(EXTRA_COLUMNS[m][0] for m in extra), "seeds"]
    if not uniform:
        columns.append("classes many/medium/few")
    # every value column: (metric, error = 100 - acc, decimals, lower is better)
    values = [(m, error, 2, error) for m in ACCURACIES] + [("ece", False, 2, True)] \
        + [(m, False, EXTRA_COLUMNS[m][1], EXTRA_COLUMNS[m][2]) for m in extra]
    rows = []
    for _, row in summary.iterrows():
        cells = [_cell(row, m, as_error, digits) for m, as_error, digits, _ in values]
        rows.append([row["base"], row["setting"], row["backbone"], row["recipe"], *cells, str(row["seeds"])]
                    + ([] if uniform else ["/".join(str(int(row[g])) for g in GROUPS)]))
    for setting in summary["setting"].unique():
        members = [r for r in rows if r[1] == setting]
        for column, (*_, lower_is_better) in enumerate(values, start=4):
            _mark_best([r[column] for r in members], lower_is_better)
    references = []
    if with_reference:
        for ref in REFERENCES:
            if any(_reference_matches(ref, row) for _, row in summary.iterrows()):
                values = (ref.acc, ref.many_acc, ref.medium_acc, ref.few_acc)
                references.append([ref.label, setting_name(ref.dataset, ref.imbalance), ref.backbone, ref.recipe,
                                   *(_ref_cell(v, error) for v in values), _ref_cell(ref.ece),
                                   *(Cell(None) for _ in extra), "-"]
                                  + ([] if uniform else [""]))
    what = "error" if error else "accuracy"
    title = f"Top-1 {what} (%) and ECE (%), mean ± std over seeds; best per dataset in bold"
    if differences is not None:
        columns.insert(5, f"Δ vs {reference}")
        for i, row in enumerate(rows + references):  # rows follow the summary's order
            row.insert(5, _difference(differences, summary["label"].iloc[i], row[1], error) if i < len(rows)
                       else Difference(None))
    return Table(title, columns, rows + references, len(references))


def paper_table(summary: pd.DataFrame, metric: str = "acc", with_reference: bool = False,
                differences: dict | None = None, reference: str = "") -> Table:
    """Rows are methods, columns dataset × IF of top-1 accuracy (or error), as CIFAR-LT papers print. With
    ``differences`` (compare_runs), each dataset × IF column is followed by the differences in it."""
    error = metric == "error"
    summary = _order(summary)
    settings, labels = list(summary["setting"].unique()), list(summary["label"].unique())
    cells = {(row["label"], row["setting"]): _cell(row, "acc", error) for _, row in summary.iterrows()}
    rows = [[label] + [cells.get((label, s), Cell(None)) for s in settings] for label in labels]
    for i in range(len(settings)):
        _mark_best([row[i + 1] for row in rows], lower_is_better=error)
    references: dict[str, list[Cell]] = {}
    if with_reference:
        for ref in REFERENCES:
            for i, setting in enumerate(settings):
                if any(_reference_matches(ref, row) for _, row in summary[summary["setting"] == setting].iterrows()):
                    references.setdefault(ref.label, [Cell(None)] * len(settings))[i] = _ref_cell(ref.acc, error)
    seeds = sorted(summary["seeds"].unique())
    if seeds == [1]:
        over = "one seed"
    else:
        over = f"mean ± std over {seeds[0]} seeds" if len(seeds) == 1 else \
            f"mean ± std over {seeds[0]}-{seeds[-1]} seeds (number in brackets)"
    title = f"Top-1 {'error' if error else 'accuracy'} (%), {over}; best per column in bold"
    rows += [[label, *ref_cells] for label, ref_cells in references.items()]
    columns = ["method", *settings]
    for i in reversed(range(len(settings)) if differences is not None else ()):  # from the right: no shifts
        columns.insert(i + 2, f"Δ vs {reference}" + (f" ({settings[i]})" if len(settings) > 1 else ""))
        for j, row in enumerate(rows):  # published rows (after ours) have no runs to pair
            row.insert(i + 2, _difference(differences, labels[j], settings[i], error) if j < len(labels)
                       else Difference(None))
    return Table(title, columns, rows, len(references), show_seeds=len(seeds) > 1)


# rendering -------------------------------------------------------------------------------------------
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

        buffer = io.StringIO()
        Console(file=buffer, width=400, color_system=None).print(to_rich(table))
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


def load_finished_runs(results: str | Path, filters: list[str] | None, warn: Callable[[str], None]) -> pd.DataFrame:
    """``load_runs``, failing with one clear line when nothing (matching) has finished."""
    df = load_runs(results, parse_filters(filters), warn)
    if df.empty:
        raise NotFoundError(f"no finished runs{' match the filters' if filters else ''} in {Path(results) / 'runs'}; "
                            f"run `ltbench run` or `ltbench sweep SUITE.toml` first, or pass --results DIR")
    return df


def build_table(results: str | Path, layout: str = "paper", metric: str = "acc", filters: list[str] | None = None,
                with_reference: bool = False, warn: Callable[[str], None] = warnings.warn,
                extra: list[str] | None = None, compare_to: str | None = None,
                replicates: int = REPLICATES) -> Table:
    """Scan, aggregate and lay out the runs of one results folder (with ``compare_to``: and the difference of
    each row to that method, with its interval)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown table layout '{layout}' (choose {', '.join(LAYOUTS)})")
    if metric not in TABLE_METRICS:
        raise ConfigError(f"unknown table metric '{metric}' (choose {', '.join(TABLE_METRICS)})")
    unknown = [m for m in extra or () if m not in EXTRA_COLUMNS]
    if unknown:
        raise ConfigError(f"--extra {unknown[0]}: not a metric the table can add (choose {', '.join(EXTRA_COLUMNS)})")
    if extra and layout != "long":
        raise ConfigError("--extra adds columns to the long layout: add --layout long")
    if replicates < 100:
        raise ConfigError(f"--replicates {replicates}: too few for a 95 % interval's 2.5 and 97.5 percentiles; "
                          f"use 1000 or more (default {REPLICATES})")
    runs = load_finished_runs(results, filters, warn)
    summary = summarize(runs)
    differences = compare_runs(runs, compare_to, replicates, warn) if compare_to else None
    if layout == "paper":
        table = paper_table(summary, metric, with_reference, differences, compare_to)
    else:
        table = long_table(summary, metric, with_reference, tuple(dict.fromkeys(extra or ())), differences, compare_to)
    if compare_to:
        table.note = comparison_note(compare_to, replicates, metric == "error")
    return table
