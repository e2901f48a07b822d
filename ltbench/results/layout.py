"""Table layouts: ``long`` (one row per group, every shot group and ECE) and ``paper`` (methods × dataset
and IF, as CIFAR-LT papers print). Best values are marked among our runs only (published rows are
context, not contestants), and only among runs of the same dataset × IF, backbone and recipe (with its
overrides): like with like. A published row appears where a run shares its setting, and, when it names the
method configuration it was measured with (reference.py ``runs_of``, ``options``), only where a run of that
configuration is in the table; its label says which."""
from __future__ import annotations

import pandas as pd

from .cells import Cell, Difference, Table, as_error
from .reference import REFERENCES, Reference
from .runs import BEST_ON_TEST, GROUPS, METHOD_ORDER, setting_name

ACCURACIES = ("acc", *(f"{group}_acc" for group in GROUPS))
# metrics the long layout can add after ECE (--extra): column name, decimals, lower is better
EXTRA_COLUMNS = {"balanced_acc": ("balanced", 2, False), "nll": ("NLL", 3, True),
                 "wrong_confidence": ("wrong conf.", 3, True), "feature_compactness": ("compactness", 3, True)}


def order_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Datasets in name order, largest imbalance first (as CIFAR-LT papers print), baselines before others."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    keyed = summary.assign(_imb=-summary["imbalance"].astype(float).fillna(0),
                           _method=summary["method"].map(lambda m: rank.get(m, len(rank))))
    return keyed.sort_values(["dataset", "_imb", "profile", "_method", "label"]).drop(columns=["_imb", "_method"])


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _cell(row, metric: str, error: bool = False, digits: int = 2) -> Cell:
    mean, std = _num(row[f"{metric}_mean"]), _num(row[f"{metric}_std"])
    if error and mean is not None:
        mean = 100.0 - mean
    return Cell(mean, std, int(row["seeds"]), digits=digits)


BEST_EPOCH_COLUMN = "best ep. (on test)"
BEST_EPOCH_NOTE = (f"{BEST_EPOCH_COLUMN}: top-1 of the final stage's best epoch on the test set (--log-test-acc), "
                   f"best on test, as the references report: a choice made on the test set; the other columns are "
                   f"the last epoch's. '-': not logged for every seed.")


def _best_epoch_cell(row, error: bool) -> Cell:
    """The best-epoch-on-test cell of a group, only where every seed logged it."""
    if int(row[f"{BEST_ON_TEST}_seeds"]) < int(row["seeds"]):
        return Cell(None)
    return _cell(row, BEST_ON_TEST, error)


def _mark_best(cells: list[Cell], lower_is_better: bool) -> None:
    """Bold the best of two or more values (as printed: ties at the printed decimals are all best)."""
    values = [round(c.mean, c.digits) for c in cells if c.mean is not None]
    if len(values) > 1:
        best = min(values) if lower_is_better else max(values)
        for cell in cells:
            cell.best = cell.mean is not None and round(cell.mean, cell.digits) == best


def _like_with_like(rows: list[list], key) -> list[tuple[tuple, list[list]]]:
    """The rows grouped by ``key`` (setting, backbone, recipe): a best value is the best among runs of the same
    schedule and backbone, never a paper-recipe row beside a 2-epoch smoke row."""
    groups: dict[tuple, list[list]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return list(groups.items())


def _best_scope(summary: pd.DataFrame, where: str) -> str:
    """What "best" is the best of, as the title says it."""
    several = [name for name, column in (("recipe", "recipe"), ("backbone", "backbone"))
               if summary[column].nunique() > 1]
    return " and ".join([where, *several])


def _reference_matches(ref: Reference, row) -> bool:
    same_imbalance = (ref.imbalance is None and pd.isna(row["imbalance"])) or (
        ref.imbalance is not None and not pd.isna(row["imbalance"]) and float(row["imbalance"]) == ref.imbalance)
    return (ref.dataset == row["dataset"] and same_imbalance and ref.backbone == row["backbone"]
            and ref.recipe == row["recipe"] and row["profile"] == "exp"
            and ref.pairs_with(row["method"], row.get("options")))  # a configuration it names: only beside it


def _ref_cell(value: float | None, error: bool = False) -> Cell:
    return Cell(None if value is None else (100.0 - value if error else value))


def _difference(differences: dict, label: str, setting: str, error: bool) -> Difference:
    cell = differences.get((label, setting), Difference(None))
    return as_error(cell) if error else cell


def long_table(summary: pd.DataFrame, metric: str = "acc", with_reference: bool = False,
               extra: tuple[str, ...] = (), differences: dict | None = None, reference: str = "",
               best_epoch: bool = False) -> Table:
    """One row per group: all / many / medium / few / ECE (/ the ``extra`` metrics) / seeds; best marked
    within each dataset × IF. With ``differences`` (compare_runs), a column of them follows "all"; with
    ``best_epoch``, the best epoch on test follows "all" (BEST_EPOCH_NOTE), never marked."""
    error = metric == "error"
    summary = order_rows(summary)
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
    for _, members in _like_with_like(rows, lambda r: (r[1], r[2], r[3])):  # setting, backbone, recipe
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
    title = f"Top-1 {what} (%) and ECE (%), mean ± std over seeds; best per {_best_scope(summary, 'dataset')} in bold"
    if best_epoch:
        columns.insert(5, BEST_EPOCH_COLUMN)
        for i, row in enumerate(rows + references):
            row.insert(5, _best_epoch_cell(summary.iloc[i], error) if i < len(rows) else Cell(None))
    if differences is not None:
        columns.insert(5, f"Δ vs {reference}")
        for i, row in enumerate(rows + references):  # rows follow the summary's order
            row.insert(5, _difference(differences, summary["label"].iloc[i], row[1], error) if i < len(rows)
                       else Difference(None))
    return Table(title, columns, rows + references, len(references))


def paper_table(summary: pd.DataFrame, metric: str = "acc", with_reference: bool = False,
                differences: dict | None = None, reference: str = "", best_epoch: bool = False) -> Table:
    """Rows are methods, columns dataset × IF of top-1 accuracy (or error), as CIFAR-LT papers print. With
    ``differences`` (compare_runs), each dataset × IF column is followed by the differences in it; with
    ``best_epoch``, then by the best epoch on test (BEST_EPOCH_NOTE)."""
    error = metric == "error"
    summary = order_rows(summary)
    settings, labels = list(summary["setting"].unique()), list(summary["label"].unique())
    cells = {(row["label"], row["setting"]): _cell(row, "acc", error) for _, row in summary.iterrows()}
    rows = [[label] + [cells.get((label, s), Cell(None)) for s in settings] for label in labels]
    schedule = summary.drop_duplicates("label").set_index("label")[["backbone", "recipe"]]
    for _, members in _like_with_like(rows, lambda r: tuple(schedule.loc[r[0]])):
        for i in range(len(settings)):
            _mark_best([row[i + 1] for row in members], lower_is_better=error)
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
    title = f"Top-1 {'error' if error else 'accuracy'} (%), {over}; best per {_best_scope(summary, 'column')} in bold"
    rows += [[label, *ref_cells] for label, ref_cells in references.items()]
    columns = ["method", *settings]
    best_cells = {(row["label"], row["setting"]): _best_epoch_cell(row, error) for _, row in summary.iterrows()}
    for i in reversed(range(len(settings)) if best_epoch else ()):  # from the right: no shifts
        columns.insert(i + 2, BEST_EPOCH_COLUMN + (f" ({settings[i]})" if len(settings) > 1 else ""))
        for j, row in enumerate(rows):
            row.insert(i + 2, best_cells.get((labels[j], settings[i]), Cell(None)) if j < len(labels) else Cell(None))
    for i in reversed(range(len(settings)) if differences is not None else ()):  # from the right: no shifts
        columns.insert(i + 2, f"Δ vs {reference}" + (f" ({settings[i]})" if len(settings) > 1 else ""))
        for j, row in enumerate(rows):  # published rows (after ours) have no runs to pair
            row.insert(i + 2, _difference(differences, labels[j], settings[i], error) if j < len(labels)
                       else Difference(None))
    return Table(title, columns, rows, len(references), show_seeds=len(seeds) > 1)
